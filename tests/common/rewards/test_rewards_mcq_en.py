"""English MCQ choice extraction: one row per case, with why that answer is right.

Several rows are failure cases of the official AnesBench extractor (spec anessuite.md sections 3.5 and 8);
their comments say what the official code returns.
"""

from __future__ import annotations

import pytest

from rlcore.rewards import explain_choice, extract_choice

OPIOID = {"A": "Propofol", "B": "Naloxone", "C": "Flumazenil", "D": "Atropine"}
ANTIHYPERTENSIVE = {"A": "ACE inhibitor", "B": "Beta blocker", "C": "Diuretic", "D": "Nitrate"}
WITH_NONE = {"A": "Propofol", "B": "Naloxone", "C": "Flumazenil", "D": "Atropine", "E": "None of the above"}
WITH_UNDETERMINED = {"A": "1 mg", "B": "2 mg", "C": "4 mg", "D": "8 mg", "E": "Cannot be determined"}

# (response, num_choices, options, expected letter)
CASES = [
    # --- explicit statements, formatting ---
    # the plain explicit statement
    ("The answer is B.", 4, None, "B"),
    # "Answer:" label
    ("Answer: C", 4, None, "C"),
    # bold markdown is stripped; "final answer" is the strongest statement
    ("**Final Answer: B**", 4, None, "B"),
    # lowercase letter in parentheses is a label, never a word
    ("The correct answer is (b).", 4, None, "B"),
    # lowercase letter at the end of the sentence
    ("the answer is b", 4, None, "B"),
    # keys are case-insensitive
    ("ANSWER: D", 4, None, "D"),
    # bold around the letter only
    ("The answer is **D**.", 4, None, "D"),
    # a bare bold letter as the whole response
    ("**C**", 4, None, "C"),
    # a bare lowercase letter as the whole response
    ("c", 4, None, "C"),
    # full-width letter (NFKC) as produced by some CJK-tuned models
    ("The answer is Ｃ.", 4, None, "C"),
    # --- boxed ---
    # boxed after a label: the box is the final answer
    ("final answer: \\boxed{C}", 4, None, "C"),
    # LaTeX \text inside a box inside math mode
    ("$\\boxed{\\text{A}}$", 4, None, "A"),
    # two boxes: the last one is the conclusion
    ("\\boxed{B} was my first guess, but recomputing gives \\boxed{D}", 4, None, "D"),
    # a box holding two letters states no single choice
    ("\\boxed{AC}", 4, None, None),
    # --- negations ---
    # official: D; the negated B is skipped, the positive D counts
    ("B is not correct. D is correct.", 4, None, "D"),
    # official: C; "not A" is skipped and "it is C" states the choice
    ("The answer is not A, it is C", 4, None, "C"),
    # the only statement is negated: nothing is chosen
    ("The answer is definitely not B.", 4, None, None),
    # a bare negation is not a choice
    ("Not B.", 4, None, None),
    # "would not choose A" is negated; "I choose C" is the choice
    ("I would not choose A. I choose C.", 4, None, "C"),
    # the letter after "not" is excluded, not ambiguous with C
    ("The answer is C, not B.", 4, None, "C"),
    # "not A but C" names C
    ("It is not A but C.", 4, None, "C"),
    # "the incorrect answer is B" negates the statement (we do not know the question's polarity)
    ("The incorrect answer is B.", 4, None, None),
    # --- several letters; the final conclusion decides ---
    # official: A (first regex hit); the right one is C
    ("Answer choices A and B are wrong; the right one is C", 4, None, "C"),
    # a long elimination ends in one explicit statement
    ("Options A and B are contraindicated and D is irrelevant; C is the best answer.", 4, None, "C"),
    # a revision: the last explicit statement wins
    ("The answer is B. Wait, let me reconsider. The answer is D.", 4, None, "D"),
    # an explicit statement outranks a later weak assertion about a subgroup
    ("Initially A seemed right, but the answer is C. A is correct only for adults.", 4, None, "C"),
    # a boxed final answer outranks a later weak assertion about a subgroup
    ("Final answer: \\boxed{C}. B is correct for children only.", 4, None, "C"),
    # "A or B" in the answer states two letters: ambiguous
    ("The answer is A or B.", 4, None, None),
    # mentioning two plausible letters, then choosing one
    ("Both B and C are plausible; I'd go with C.", 4, None, "C"),
    # per-option verdicts: only C is marked correct
    ("Option A: incorrect. Option B: incorrect. Option C: correct. Option D: incorrect.", 4, None, "C"),
    # restated option list with no statement: official would pick the last letter; we abstain
    ("A. Propofol\nB. Naloxone\nC. Flumazenil\nD. Atropine", 4, None, None),
    # a lone letter closing the sentence after "therefore" is the conclusion
    ("Both A and C are incorrect; therefore B.", 4, None, "B"),
    # "therefore B is contraindicated" is a claim about B, not a choice of B
    ("Therefore B is contraindicated in this patient.", 4, None, None),
    # a single option label line is a direct answer
    ("C. Naloxone\n\nNaloxone is an opioid antagonist.", 4, None, "C"),
    # the letter with its option text in parentheses is the subject of "is the correct choice"
    ("Option B (Naloxone) is the correct choice.", 4, None, "B"),
    # "B. Naloxone" as one subject: the period after a lone letter is a label, not a sentence end
    ("B. Naloxone is the correct answer.", 4, None, "B"),
    # "the most likely diagnosis is B" names a letter after a superlative noun phrase
    ("The most likely diagnosis is B.", 4, None, "B"),
    # --- hypotheticals and questions ---
    # "if the answer is A" is hypothetical; the conclusion is C
    ("If the answer is A, the dose would be toxic. So the answer is C.", 4, None, "C"),
    # "Is it A?" is a question; "It is C" answers it
    ("Is it A? No. It is C.", 4, None, "C"),
    # "whether the answer is A" is hypothetical; "pick D" is the choice
    ("Whether the answer is A depends on the dose; I'd pick D.", 4, None, "D"),
    # --- option text instead of the letter ---
    # official: B via text substitution; here the statement names option B's text
    ("Therefore the correct answer is Naloxone.", 4, OPIOID, "B"),
    # the negated option text after "not" does not count
    ("The answer is flumazenil, not naloxone.", 4, OPIOID, "C"),
    # option text as the subject of "is the correct answer"
    ("Naloxone is the correct answer.", 4, OPIOID, "B"),
    # "drug of choice" predicate with option text as its subject
    ("Naloxone is the drug of choice for opioid reversal.", 4, OPIOID, "B"),
    # the article "a" before an option text: the text matches option B ("beta blocker")
    ("the answer is a beta blocker", 4, ANTIHYPERTENSIVE, "B"),
    # --- letters inside words and terms, 'A' as an article ---
    # "C" is part of "Vitamin C", not a choice (no options to match the term)
    ("Vitamin C is the correct answer.", 4, None, None),
    # "B" belongs to "Hepatitis B"
    ("Hepatitis B is most likely.", 4, None, None),
    # hyphenated and digit-adjacent letters are never choices
    ("C-reactive protein is elevated; vitamin B12 is low.", 4, None, None),
    # official: A (article captured by the last-resort regex); no choice is stated
    ("A thorough history is needed before deciding.", 4, None, None),
    # "a" followed by an ordinary word is an article
    ("the answer is a beta blocker", 4, None, None),
    # "A is correct": a capital letter as the subject of "is" is a letter, not an article
    ("A is correct.", 4, None, "A"),
    # lowercase "a" closing the sentence is the letter
    ("The answer is a.", 4, None, "A"),
    # --- 5-option and 10-option questions, range ---
    # "E. coli" (lowercase after the period) is an organism, not option E with its text
    ("E. coli is the most likely cause.", 5, None, None),
    # E does not exist with 4 options
    ("The answer is E.", 4, None, None),
    # E exists with 5 options
    ("The answer is E.", 5, None, "E"),
    # "E. coli" is not a choice; the conclusion is B
    ("E. coli is the most common cause, so the answer is B.", 5, None, "B"),
    # H is valid with 10 options (A..J)
    ("Answer: (H)", 10, None, "H"),
    # J is the last of 10 options
    ("The answer is J.", 10, None, "J"),
    # the letter I as a choice with 10 options
    ("The answer is I.", 10, None, "I"),
    # "I think" is the pronoun; the choice is B
    ("Answer: I think B", 10, None, "B"),
    # K is beyond ten options
    ("The answer is K.", 10, None, None),
    # --- refusals ---
    # official: an arbitrary letter by fuzzy matching; a refusal abstains
    ("I cannot determine the answer from the information given.", 4, None, None),
    # "none of the options is correct" without such an option is a refusal
    ("None of the above options is correct.", 4, None, None),
    # "I don't know" abstains
    ("I'm sorry, but I don't know.", 4, None, None),
    # a refusal after a weak assertion is the final conclusion
    ("B seems right, but honestly none of the options is correct.", 4, None, None),
    # a refusal before the conclusion is overruled by it
    ("None of the options is perfect, but the best answer is C.", 4, None, "C"),
    # "none of the above" is a real option here: the statement names option E
    ("The answer is none of the above.", 5, WITH_NONE, "E"),
    # official: E by substituting option text; "cannot be calculated" states no choice
    ("It cannot be calculated.", 5, WITH_UNDETERMINED, None),
    # the statement names option E's text explicitly
    ("The answer is: cannot be determined.", 5, WITH_UNDETERMINED, "E"),
    # --- reasoning-model and tag formats ---
    # the text after </think> decides over the reasoning
    ("<think>The answer is B.</think>\nAnswer: C", 4, None, "C"),
    # the answer block is authoritative
    ("<think>A or C... C fits.</think><answer>C</answer>", 4, None, "C"),
    # "So it's C." is a short conclusion
    ("So it's C.", 4, None, "C"),
]


@pytest.mark.parametrize(("text", "num_choices", "options", "expected"), CASES)
def test_extract_choice_english(text, num_choices, options, expected):
    assert extract_choice(text, num_choices=num_choices, lang="en", options=options) == expected


def test_english_table_is_large_enough():
    assert len(CASES) >= 35


@pytest.mark.parametrize("num_choices", [4, 5, 10])
@pytest.mark.parametrize("letter", list("ABCDEFGHIJK"))
def test_every_letter_in_and_out_of_range(letter, num_choices):
    # "The answer is X." names X exactly when X is one of the first num_choices letters
    in_range = "ABCDEFGHIJ".index(letter) < num_choices if letter != "K" else False
    assert extract_choice(f"The answer is {letter}.", num_choices=num_choices) == (
        letter if in_range else None
    )


@pytest.mark.parametrize(
    ("text", "num_choices", "reason"),
    [
        ("The answer is E.", 4, "out_of_range"),  # a letter beyond the options
        ("The answer is A or B.", 4, "ambiguous"),  # two letters stated
        ("I cannot determine this.", 4, "refusal"),  # explicit refusal
        ("Let us think about pharmacology.", 4, "no_statement"),  # nothing stated
        ("The answer is C.", 4, "matched"),  # a usable choice
    ],
)
def test_explain_choice_reports_why(text, num_choices, reason):
    assert explain_choice(text, num_choices=num_choices).reason == reason


def test_options_as_list_in_letter_order():
    # anessuite passes option texts as a list; index 1 is option B
    texts = ["Propofol", "Naloxone", "Flumazenil", "Atropine"]
    assert extract_choice("The answer is naloxone.", options=texts) == "B"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_choices": 0}, "num_choices must be an int in 1..10"),
        ({"num_choices": 11}, "num_choices must be an int in 1..10"),
        ({"lang": "fr"}, "lang must be 'auto', 'en' or 'zh'"),
        ({"options": {"E": "extra"}}, "option key 'E' is not one of"),
        ({"options": ["a", "b", "c", "d", "e"]}, "5 options given for num_choices=4"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_choice("The answer is A.", **kwargs)
