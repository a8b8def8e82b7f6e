"""spam: an email -> exactly "spam" or "not spam" (no credit for "This is spam.")."""

from __future__ import annotations

import random

from groklm.tasks.base import NAMES, Problem, Task, exact_reward, single_turn

SPAM_TEMPLATES = (
    "Congratulations {name}! You won a {prize}. Click {link} to claim it now.",
    "URGENT: your account is locked. Send your password to {link} today.",
    "Cheap {prize} for you! {pct}% off, only today. Buy now at {link}",
    "Dear {name}, you have been selected for a free {prize}. Reply with your bank details.",
    "Earn {pct}00 dollars a day from home! Visit {link} now.",
)
HAM_TEMPLATES = (
    "Hi {name}, can we move the meeting to {day} at {hour}?",
    "Thanks for the {thing} yesterday, {name}. See you on {day}.",
    "Reminder: the {thing} report is due on {day}.",
    "Hi {name}, lunch on {day}? I can book a table for {hour}.",
    "{name}, I left the {thing} on your desk. Call me on {day}.",
)
PRIZES = "phone car laptop cruise watch prize gift card".split()
LINKS = ("www.win-now.biz", "bit.ly/free", "claim-prize.net", "secure-login.info", "best-deal.xyz")
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
THINGS = "budget sales project notes slides dinner book".split()


def generate(rng: random.Random) -> Problem:
    is_spam = rng.random() < 0.5
    fill = dict(
        name=rng.choice(NAMES), prize=rng.choice(PRIZES), link=rng.choice(LINKS), pct=rng.randint(2, 9) * 10,
        day=rng.choice(DAYS), hour=f"{rng.randint(9, 17)}:00", thing=rng.choice(THINGS),
    )
    email = rng.choice(SPAM_TEMPLATES if is_spam else HAM_TEMPLATES).format(**fill)
    ask = rng.choice(
        ["Is this email spam? Answer spam or not spam.", "Spam or not spam?", "Classify this email as spam or not spam."]
    )
    answer = "spam" if is_spam else "not spam"
    other = "not spam" if is_spam else "spam"
    return single_turn(
        email, rng, f"{ask}\n{email}", answer, f"This email is {answer}.", [other],
        [answer.capitalize() + "!", f"{answer}, because it looks like {answer}"],
    )


TASK = Task("spam", generate, exact_reward)
