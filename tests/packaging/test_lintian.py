"""lintian finds no error in the package (the overrides in debian/ say why each is acceptable)."""

import pytest

pytestmark = pytest.mark.timeout(600)


def test_lintian_reports_no_errors(package):
    output, _ = package.lintian.communicate(timeout=500)
    errors = [line for line in output.splitlines() if line.startswith("E:")]
    assert package.lintian.returncode == 0 and not errors, "\n".join(errors[:50]) or output[-3000:]
