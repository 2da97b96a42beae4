"""The overload soak (``make soak-retrieval``) in miniature, and its checks catching what they should."""

import pytest

from rlcore.retrieval.soak import SoakConfig, _Tally, run_soak, summary_markdown


def test_tally_flags_every_kind_of_wrong_answer():
    tally = _Tally()
    tally.record(None, 200, {})
    tally.record(None, 503, {"retry-after": "1"})
    tally.record("bad-json", 400, {})
    tally.record("topk-zero", 422, {})
    assert not tally.violations  # all four are what a correct server answers
    tally.record(None, 503, {})  # shed without telling the client when to come back
    tally.record(None, 500, {})
    tally.record(None, 429, {})
    tally.record("bad-json", 200, {})  # a malformed request accepted
    tally.record("bad-json", 503, {"retry-after": "1"})  # a malformed request must be rejected, not shed
    tally.error(None, ConnectionResetError("reset"))
    assert len(tally.violations) == 6, tally.violations


@pytest.mark.slow
def test_short_soak_passes_every_check(tmp_path):
    cfg = SoakConfig(
        passages=2000,
        connections=16,
        capacity_seconds=3.0,
        overload_seconds=6.0,
        max_connections=128,
        cooldown_seconds=20.0,
        out=str(tmp_path),
    )
    results = run_soak(cfg)
    assert results["passed"], summary_markdown(results)
    assert results["valid"].get("200", 0) > 0 and sum(results["malformed"].values()) > 0
    assert set(results["valid"]) <= {"200", "503"}
    assert all(400 <= int(status) < 500 for status in results["malformed"])
