"""Count words in a job's text. Plain `def` hooks work as well as `async def` ones."""

import collections
import re

import autoweave

WORD = re.compile(r"[\w']+")


def warm_up():
    count_words({"text": "warm up"})


def count_words(job):
    words = WORD.findall(job["text"].lower())
    autoweave.metric("words.counted", len(words))
    return {"total": len(words), "top": collections.Counter(words).most_common(job.get("top", 3))}
