"""Ready-made judges for `relupo judge --judge module:function`: each scores (prompt, response)."""

from __future__ import annotations

from functools import lru_cache

from relupo.errors import ConfigError


@lru_cache(maxsize=1)
def _vader():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise ConfigError("the vader judge needs the vaderSentiment package: pip install vaderSentiment") from None
    return SentimentIntensityAnalyzer()


def vader_sentiment(prompt: str, response: str) -> float:
    """Return VADER's compound sentiment of the response, in [-1, 1] (Hutto and Gilbert 2014).

    The lexicon ships inside the vaderSentiment package, so this judge runs offline. It ignores the
    prompt and measures positive wording, not helpfulness or harmlessness.
    """
    return _vader().polarity_scores(response)["compound"]
