"""Under CI a skipped test fails with its reason; elsewhere it stays a skip."""

import pytest

TESTS = '''
import pytest

def test_passes():
    pass

def test_skips_itself():
    pytest.skip("needs the frobnicator: apt-get install frob")

@pytest.mark.skipif(True, reason="needs a JDK")
def test_marked():
    pass

@pytest.fixture
def lab():
    pytest.skip("the lab needs root")

def test_in_the_lab(lab):
    pass

@pytest.mark.xfail(reason="a known bug")
def test_known_bug():
    assert False
'''


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_some=TESTS)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "tests.skips",
                              "-W", "ignore::pytest.PytestAssertRewriteWarning", *args)


def test_under_ci_every_kind_of_skip_fails_and_keeps_its_reason(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = run(suite)
    # a skip in setup (skipif, a fixture) becomes an error, one in the test a failure
    result.assert_outcomes(passed=1, failed=1, errors=2, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str()
    for reason in ("needs the frobnicator: apt-get install frob", "needs a JDK",
                   "the lab needs root"):
        assert f"skipped under CI, which must install what every test needs: {reason}" in output


def test_under_ci_a_skipped_module_fails_the_run(suite: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    suite.makepyfile(test_module="import pytest\n"
                                 "pytest.skip('needs Spark', allow_module_level=True)\n")
    monkeypatch.setenv("CI", "true")
    result = run(suite, "test_module.py")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert ("skipped under CI, which must install what every test needs: needs Spark"
            in result.stdout.str())
    monkeypatch.setenv("CI", "false")
    run(suite, "test_module.py").assert_outcomes(skipped=1)


@pytest.mark.parametrize("value", [None, "false"])
def test_outside_ci_skips_stay_skips(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                     value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    result = run(suite, "-rs")
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "needs the frobnicator: apt-get install frob" in result.stdout.str()
