"""Check that a data file's first bytes match its extension, before a reader misreads them.

A `.jsonl.gz` that is plain text, a `.parquet` that contains JSON Lines, or a UTF-16 export would
otherwise fail inside the reader with a message about gzip headers, Thrift or invalid UTF-8.
"""

from __future__ import annotations

from pathlib import Path

from relupo.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
ZIP_MAGIC = b"PK\x03\x04"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
UTF8_BOM = b"\xef\xbb\xbf"


def check_file_kind(path: Path, label: str) -> None:
    """Raise DataError when the file's first bytes contradict its extension or show UTF-16 text.

    Empty files pass, so that the readers report them as inputs with no rows.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as error:
        raise DataError(f"{label}: failed to read the file ({error.strerror}).") from None
    if not head:
        return

    name = path.name.lower()
    content = describe_start(head)
    if name.endswith(".gz"):
        if not head.startswith(GZIP_MAGIC):
            raise DataError(
                f"{label}: the name ends in .gz but the file is not gzip-compressed ({content}); "
                f"remove .gz from the name or compress the file with gzip."
            )
        return
    if name.endswith(".parquet"):
        if not head.startswith(PARQUET_MAGIC):
            raise DataError(
                f"{label}: the name ends in .parquet but the file is not Parquet ({content}); rename it "
                f"to match its content, for example .jsonl for JSON Lines."
            )
        return

    # The remaining inputs (.jsonl, .json, .csv) are UTF-8 text.
    if head.startswith(GZIP_MAGIC):
        fix = "add .gz to the name" if name.endswith(".jsonl") else "decompress it with gunzip first"
        raise DataError(f"{label}: the file is gzip-compressed but its name does not end in .gz; {fix}.")
    if head.startswith((PARQUET_MAGIC, ZIP_MAGIC)) or head.startswith(UTF16_BOMS):
        raise DataError(f"{label}: the file is not UTF-8 text ({content}); {_text_fix(head)}")


def describe_start(head: bytes) -> str:
    """Name what a file that starts with `head` contains, for error messages."""
    if head.startswith(GZIP_MAGIC):
        return "it is gzip-compressed"
    if head.startswith(PARQUET_MAGIC):
        return "it is a Parquet file"
    if head.startswith(ZIP_MAGIC):
        return "it is a ZIP archive"
    if head.startswith(UTF16_BOMS):
        return "it is UTF-16 text"
    text = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    stripped = text.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "it starts like JSON text"
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the end of the sample is still text.
        if error.start < len(text) - 3:
            return f"it starts with the bytes {head[:4].hex(' ')}"
    return "it starts like plain text"


def _text_fix(head: bytes) -> str:
    if head.startswith(PARQUET_MAGIC):
        return "rename it to .parquet."
    if head.startswith(ZIP_MAGIC):
        return "extract the data file from the archive first."
    return "save it as UTF-8."
