"""Which JSON Schema validator checks the catalog's task bodies on the hot path.

For every family in the shipped catalog (service/catalog/families) and every model with
examples (tests/catalog/examples/<family>.json), times one check of each example body,
valid and invalid, with each candidate validator compiled once beforehand (as the gateway
compiles each document once): `jsonschema` (pure Python, Draft 2020-12), `jsonschema-rs`
(Rust, Draft 2020-12) and `fastjsonschema` (generated Python code, drafts 4/6/7 only: it
has no 2020-12 mode, so `dependentRequired`, `prefixItems` and `$defs` semantics are not
its own; it is timed on the same schemas as Draft 7, and a schema it cannot compile is
reported). A valid body costs one `is_valid`; an invalid one is what the gateway does to
refuse it: the validity check, then the errors listed to pick the field to name.

Prints microseconds per request, median over --repeat rounds, per family and validator.

    .venv/bin/python bench/catalog_validators.py [--number 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import jsonschema_rs

from service.catalog.engine import shipped_catalog

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "catalog" / "examples"


def _candidates(schema: dict[str, Any]) -> dict[str, tuple[Callable[[Any], Any], Any]]:
    """name -> (check of a valid body, check of an invalid body listing its errors)."""
    found: dict[str, tuple[Callable[[Any], Any], Any]] = {}
    py = jsonschema.Draft202012Validator(schema)
    found["jsonschema"] = (py.is_valid, lambda b: py.is_valid(b) or list(py.iter_errors(b)))
    rs = jsonschema_rs.Draft202012Validator(schema)
    found["jsonschema-rs"] = (rs.is_valid, lambda b: rs.is_valid(b) or list(rs.iter_errors(b)))
    try:
        fast = fastjsonschema.compile(
            {**schema, "$schema": "http://json-schema.org/draft-07/schema#"}
        )
    except Exception:  # a schema it cannot compile is a result, not a crash
        found["fastjsonschema"] = (None, None)  # type: ignore[assignment]
        return found

    def fast_check(body: Any) -> bool:
        try:
            fast(body)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    found["fastjsonschema"] = (fast_check, fast_check)
    return found


def _time(fn: Callable[[], Any], number: int, repeat: int) -> float:
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    catalog = shipped_catalog()
    names = ("jsonschema", "jsonschema-rs", "fastjsonschema")
    print(f"catalog {catalog.digest[:12]}: {len(catalog.models)} models")
    print(f"{'family':<14} {'bodies':>6}  " + "  ".join(f"{n + ' ok/bad µs':>26}" for n in names))
    for path in sorted(EXAMPLES.glob("*.json")):
        examples = json.loads(path.read_text("utf-8"))
        totals: dict[str, list[float]] = {n: [0.0, 0.0] for n in names}
        counts = [0, 0]
        unsupported: set[str] = set()
        for model_id, cases in examples.items():
            entry = catalog.models.get(model_id)
            if entry is None:
                continue
            checks = _candidates(entry.schema)
            for name, (ok, bad) in checks.items():
                if ok is None:
                    unsupported.add(name)
                    continue
                for body in cases.get("valid", []):
                    totals[name][0] += _time(lambda b=body, f=ok: f(b), args.number, args.repeat)
                for case in cases.get("invalid", []):
                    totals[name][1] += _time(
                        lambda b=case["body"], f=bad: f(b), args.number, args.repeat
                    )
            counts[0] += len(cases.get("valid", []))
            counts[1] += len(cases.get("invalid", []))
        cells = []
        for name in names:
            if name in unsupported:
                cells.append(f"{'cannot compile':>26}")
                continue
            ok_us = totals[name][0] / max(1, counts[0])
            bad_us = totals[name][1] / max(1, counts[1])
            cells.append(f"{ok_us:>12.2f} / {bad_us:>11.2f}")
        print(f"{path.stem:<14} {counts[0]:>3}/{counts[1]:<3} " + "  ".join(cells))


if __name__ == "__main__":
    main()
