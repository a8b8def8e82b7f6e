"""spam: an email -> exactly "spam" or "not spam" (no credit for "This is spam.").

The emails are short and varied on purpose: phishing, prizes, loans, fake support, investment
bait; meetings, family, errands, school, colleagues. Each is a template with a few slots (names,
days, sums, links), short enough that the instruction and the whole email fit the 64 tokens of
prompt a tiny model's eval keeps. A quarter of each kind is held out (base.Forms): the heldout
split asks about emails written in ways no training email was. None shares four words in a row
with the realistic emails benchmarks/real_model.py classifies, which stay an outside check.
"""

from __future__ import annotations

import random

from groklm.tasks.base import NAMES, Forms, Problem, Task, exact_reward, single_turn

SPAM = Forms(
    seen=(
        "Congratulations {name}! You won a {prize}. Click {link} to claim it now.",
        "URGENT: your account is locked. Send your password to {link} today.",
        "Cheap {prize} for you! {pct}% off, only today. Buy now at {link}",
        "Dear {name}, you are chosen for a free {prize}. Send us your bank details to get it.",
        "Earn {pct}00 dollars a day from home! Visit {link} now.",
        "Your {prize} order is on hold because your card was declined. Enter your card again at {link}",
        "{name}, a friend left you a secret voice message. Listen before it expires: {link}",
        "Insider tip: this coin will rise {pct}0% by {day}. Buy now at {link}",
        "You are pre-approved for a {big},000 dollar loan, no credit check. Get cash today at {link}",
        "Your antivirus expired and your computer is at risk! Renew for {small} dollars at {link}",
        "Hi {name}, this is your bank's fraud team. Read us the code we just texted you to stop a payment.",
        "Get {big},000 real followers for just {small} dollars! Grow your page overnight at {link}",
        "{name}, you owe {small} dollars in unpaid tolls. Pay at {link} by {day} to avoid a fine.",
    ),
    held_out=(
        "{name}, I lost my wallet abroad. Can you wire {big}0 dollars today? I will pay you back.",
        "Your {prize} plan renews today for {big}9 dollars. Not you? Cancel within 2 hours at {link}",
        "Miracle cream removes wrinkles in {small} days! Stars swear by it. {pct}% off at {link}",
        "We tried to reach you about your car warranty. Visit {link} before your cover ends on {day}.",
    ),
)
HAM = Forms(
    seen=(
        "Hi {name}, can we move the meeting to {day} at {hour}?",
        "Thanks for the {thing} yesterday, {name}. See you on {day}.",
        "Reminder: the {thing} report is due on {day}.",
        "Hi {name}, lunch on {day}? I can book a table for {hour}.",
        "{name}, I left the {thing} on your desk. Call me on {day}.",
        "Hey {name}, running about {small} minutes late, start without me.",
        "Hi everyone, the kitchen fridge gets cleared out on {day}. Label anything you want to keep.",
        "Grandma lands at {hour} on {day}. Can you pick her up? I am stuck at work.",
        "Your library book is due back on {day}. You can renew it once on the website.",
        "Hi {name}, here are the notes from today's call. Tell me if I missed anything. Best, {sender}",
        "The plumber is coming on {day} at {hour}. Can someone be home to let him in?",
        "{name}, the school trip leaves at {hour} on {day}. Pack a lunch and a raincoat.",
        "{sender} here: I fixed the bug on the login page. Could you test it before {day}?",
    ),
    held_out=(
        "{name}, great game on {day}! Same court next week? I will bring new balls.",
        "Did you read the {thing} draft? I want to send it out on {day}. {sender}",
        "Hi team, timesheets are due {day} by {hour}. Ping me if the form breaks.",
        "Happy birthday, {name}! Coffee on {day} to celebrate?",
    ),
)
ASK = Forms(
    seen=(
        "Is this email spam? Answer spam or not spam.",
        "Spam or not spam?",
        "Classify this email as spam or not spam.",
        "Is the message below spam? Reply spam or not spam.",
        "Decide: spam or not spam.",
    ),
    held_out=("Label this email as spam or not spam.", "Is it spam or not spam?"),
)
PRIZES = "phone car laptop cruise watch prize gift card handbag".split()
LINKS = ("www.win-now.biz", "bit.ly/free", "claim-prize.net", "secure-login.info", "best-deal.xyz", "acc0unt-check.com")
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
THINGS = "budget sales project notes slides dinner book".split()


def generate(rng: random.Random, held_out: bool) -> Problem:
    is_spam = rng.random() < 0.5
    fill = dict(
        name=rng.choice(NAMES), sender=rng.choice(NAMES), prize=rng.choice(PRIZES), link=rng.choice(LINKS),
        pct=rng.randint(2, 9) * 10, small=rng.randint(5, 40), big=rng.randint(2, 90), day=rng.choice(DAYS),
        hour=f"{rng.randint(9, 17)}:00", thing=rng.choice(THINGS),
    )
    email = (SPAM if is_spam else HAM).pick(rng, held_out, **fill)
    ask = ASK.pick(rng, held_out)
    answer = "spam" if is_spam else "not spam"
    other = "not spam" if is_spam else "spam"
    return single_turn(
        email, rng, f"{ask}\n{email}", answer, f"This email is {answer}.", [other],
        [answer.capitalize() + "!", f"{answer}, because it looks like {answer}"],
    )


TASK = Task("spam", generate, exact_reward, (SPAM, HAM, ASK))
