"""Comparing stored rows with expected ones, strictly (1 != 1.0 != True): shared by the end-to-end
tests of both backends, whatever their rows hold."""

from __future__ import annotations

from typing import Any, Callable, Sequence


def strict_diff(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Differences between two decoded values, where 1 != 1.0 != True and key sets must match."""
    where = path or "<value>"
    if type(actual) is not type(expected):
        return [f"{where}: expected {expected!r} ({type(expected).__name__}), got {actual!r} ({type(actual).__name__})"]
    if isinstance(expected, dict):
        out = []
        for k in sorted(set(actual) | set(expected)):
            if k not in actual:
                out.append(f"{path}.{k}: missing (expected {expected[k]!r})")
            elif k not in expected:
                out.append(f"{path}.{k}: unexpected {actual[k]!r}")
            else:
                out.extend(strict_diff(actual[k], expected[k], f"{path}.{k}"))
        return out
    if isinstance(expected, list):
        if len(actual) != len(expected):
            return [f"{where}: expected {len(expected)} items {expected!r}, got {len(actual)} {actual!r}"]
        out = []
        for i, (a, e) in enumerate(zip(actual, expected)):
            out.extend(strict_diff(a, e, f"{path}[{i}]"))
        return out
    if actual != expected:
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []


def compare_rows(
    actual: Sequence[dict],
    expected: Sequence[dict],
    key: Callable[[dict], Any],
    columns: Sequence[str],
    label: str,
) -> list[str]:
    """Every difference between stored and expected rows, matched by `key`: rows missing, rows not
    expected, duplicated keys, and column by column (strictly: 1 != 1.0 != True)."""
    problems: list[str] = []
    by_key: dict[Any, dict] = {}
    for r in actual:
        k = key(r)
        if k in by_key:
            problems.append(f"{label}: stored more than once: {k}")
        by_key[k] = r
    exp_by_key: dict[Any, dict] = {}
    for r in expected:
        k = key(r)
        assert k not in exp_by_key, f"{label}: the test's own key is not unique: {k}"
        exp_by_key[k] = r
    for k in exp_by_key.keys() - by_key.keys():
        problems.append(f"{label}: missing row {k}")
    for k in by_key.keys() - exp_by_key.keys():
        problems.append(f"{label}: unexpected row {k}: {by_key[k]}")
    for k in exp_by_key.keys() & by_key.keys():
        row, exp = by_key[k], exp_by_key[k]
        if set(row) != set(columns):
            problems.append(f"{label}: columns differ from the schema: {sorted(set(row) ^ set(columns))}")
        for col in columns:
            problems += [f"{label} {k} {col}: {d}" for d in strict_diff(row.get(col), exp[col], "")]
    return problems

