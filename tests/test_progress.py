"""Progress bars: a log gets whole lines at the interval, never carriage-return redraws."""

import io

from tavr.progress import bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_interval_and_a_last_line():
    out = io.StringIO()
    for _ in bar(range(1000), file=out, desc="steps", interval=3600):
        pass
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # the interval is an hour: the opening line and the closing one, nothing in between
    assert 1 <= len(lines) <= 3, lines
    assert "1000/1000" in lines[-1] and lines[-1].startswith("steps")


def test_a_log_with_a_short_interval_gets_a_line_per_update():
    out = io.StringIO()
    b = bar(total=5, file=out, interval=0)
    for _ in range(5):
        b.update(1)
    b.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 6 and all(f"{i}/5" in line for i, line in zip(range(1, 6), lines[1:])), lines
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_the_live_bar():
    out = _Terminal()
    for _ in bar(range(10), file=out, interval=0):
        pass
    assert "\r" in out.getvalue()
