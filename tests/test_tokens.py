"""The token convention: response tokens follow the generation prefix; long pairs never lose the
end of a response."""

import pytest
from mlx_lm import load

from clo_mlx.data import Pair
from clo_mlx.tokens import PLAIN_PREFIX, encode_pair, encode_pairs, prompt_ids


@pytest.fixture(scope="module")
def tok(tiny_llama):
    return load(str(tiny_llama))[1]


def test_response_tokens_follow_the_generation_prefix(tok):
    prompt, response = "How many legs does a spider have?", "A spider has eight legs."
    ids, start = encode_pair(tok, prompt, response)
    assert ids[:start] == prompt_ids(tok, prompt)
    full = tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
        tokenize=False,
    )
    assert tok.decode(ids) == full
    # The response tokens are the answer and the template's end-of-turn: nothing of the prompt.
    assert tok.decode(ids[start:]) == response + "<|im_end|>\n"


def test_plain_fallback_without_chat_template(tiny_llama):
    _, tok = load(str(tiny_llama))
    tok._tokenizer.chat_template = None
    ids, start = encode_pair(tok, "Say hi", "Hi!")
    assert tok.decode(ids[:start]) == PLAIN_PREFIX.format(prompt="Say hi")
    assert tok.decode(ids[start:]) == "Hi!" + tok.eos_token


def test_truncation_cuts_the_prompt_from_the_left_and_reports(tok):
    long_prompt = "Name three colours. " * 30
    pairs = [
        Pair(0, "en", "en", long_prompt, "Red.", "Nyekundu, kijani na bluu."),
        Pair(1, "en", "en", "Hi", "Hello.", "Habari."),
    ]
    full = [
        encode_pair(tok, long_prompt, "Red."),
        encode_pair(tok, long_prompt, "Nyekundu, kijani na bluu."),
    ]
    max_len = 40
    encoded, report = encode_pairs(tok, pairs, max_len)
    assert report.truncated == [0] and report.dropped == []
    e = encoded[0]
    assert len(e.chosen) <= max_len and len(e.rejected) <= max_len
    # Response tokens intact, at the end; the same number of prompt tokens cut from both.
    assert e.chosen[e.chosen_start :] == full[0][0][full[0][1] :]
    assert e.rejected[e.rejected_start :] == full[1][0][full[1][1] :]
    assert len(full[0][0]) - len(e.chosen) == len(full[1][0]) - len(e.rejected)
    assert "1 pairs exceed max_seq_length=40" in report.message()


def test_drop_policy_and_responses_too_long_are_dropped(tok):
    long_prompt = "Name three colours. " * 30
    pairs = [
        Pair(0, "en", "en", long_prompt, "Red.", "Blue."),
        Pair(1, "en", "en", "Hi", "Hello. " * 60, "Hi."),
    ]
    encoded, report = encode_pairs(tok, pairs, 40, policy="drop")
    assert encoded == [] and report.dropped == [0, 1]
    encoded, report = encode_pairs(tok, pairs, 40)
    assert report.truncated == [0] and report.dropped == [1] and len(encoded) == 1
