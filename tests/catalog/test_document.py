"""The catalog document: merged from the family files, refused whole when bad (the message
names what is wrong), identified by the sha256 of its canonical JSON."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.catalog.document import CatalogError, build_document, canonical_json
from service.catalog.engine import compile_catalog, load_catalog, shipped_catalog

FAMILIES = Path(__file__).resolve().parents[2] / "service" / "catalog" / "families"


def test_the_shipped_document_is_every_family_file_merged() -> None:
    document = build_document()
    for path in sorted(FAMILIES.glob("*.json")):
        fragment = json.loads(path.read_text("utf-8"))
        for model_id, model in fragment["models"].items():
            assert document["models"][model_id] == model, path.name
        for family in fragment.get("family", fragment.get("families", {})):
            assert family in document["families"]
    catalog = shipped_catalog()
    assert catalog.digest == hashlib.sha256(canonical_json(document)).hexdigest()
    assert {"minimax-hailuo-02", "minimax-h3", "minimax-h3-regeneration"} <= set(catalog.models)


def test_key_order_does_not_change_the_digest() -> None:
    document = build_document()
    shuffled = json.loads(json.dumps(document, sort_keys=True))
    shuffled["models"] = dict(reversed(list(shuffled["models"].items())))
    assert compile_catalog(shuffled).digest == compile_catalog(document).digest
    edited = copy.deepcopy(document)
    edited["models"]["minimax-h3"]["pricing"]["rates"]["2k"] = "0.118"
    assert compile_catalog(edited).digest != compile_catalog(document).digest


def test_a_model_defined_in_two_files_is_refused(tmp_path: Path) -> None:
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text((FAMILIES / "minimax-h3.json").read_text("utf-8"))
    with pytest.raises(CatalogError, match=r"b.json: families.minimax-h3 is defined twice"):
        build_document(tmp_path)


def _break(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(document: dict[str, Any]) -> None:
        node = document
        *parents, last = path.split("/")
        for part in parents:
            node = node[part]
        node[last] = value

    return apply


H3 = "models/minimax-h3"
BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown kind", _break(f"{H3}/pricing/kind", "per_token"), "unknown pricing kind 'per_token'"),
    (
        "7 decimals",
        _break(f"{H3}/pricing/rates/2k", "0.1170001"),
        "models.minimax-h3.pricing.rates.2k: '0.1170001' has more than 6 decimals",
    ),
    ("a float price", _break(f"{H3}/pricing/rates/2k", 0.117), "must be a decimal string"),
    ("negative", _break(f"{H3}/pricing/rates/2k", "-1"), "must be a finite price >= 0"),
    (
        "invalid schema",
        _break(f"{H3}/body/properties/duration/type", "whole"),
        "models.minimax-h3.body: invalid JSON Schema",
    ),
    (
        "default outside its enum",
        _break(f"{H3}/defaults/resolution", "4k"),
        "models.minimax-h3.defaults.resolution: '4k' is not allowed",
    ),
    (
        "ref_task_id without a chain rule",
        _break("models/minimax-h3-regeneration/chain", None),
        "models.minimax-h3-regeneration.chain: ref_task_id needs a chain rule",
    ),
    (
        "a chain action the model lacks",
        _break("models/minimax-h3-regeneration/chain/actions", ["extend"]),
        "'extend' is not one of the model's actions",
    ),
    (
        "an unknown source model",
        _break("models/minimax-h3-regeneration/chain/source_models", ["h9"]),
        "unknown model 'h9'",
    ),
    (
        "a gateway field in the schema",
        _break(f"{H3}/body/properties/callback_url", {"type": "string"}),
        "body.properties.callback_url: a gateway field",
    ),
    ("a variant without when", _break(f"{H3}/pricing/variants", [{"rates": {}}]), "needs 'when'"),
    ("no models", _break("models", {}), "models: must be a non-empty object"),
]


@pytest.mark.parametrize(("name", "breaks", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_document_is_refused_whole_naming_the_fault(
    name: str, breaks: Callable[[dict[str, Any]], None], message: str
) -> None:
    document = build_document()
    breaks(document)
    with pytest.raises(CatalogError) as refused:
        compile_catalog(document)
    assert message in str(refused.value)


def test_a_catalog_file_replaces_the_shipped_one(tmp_path: Path) -> None:
    document = build_document(label="ops-2026-12-06")
    document["models"]["minimax-h3"]["pricing"]["rates"]["2k"] = "0.2"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(document))
    catalog = load_catalog(path)
    assert catalog.entry("minimax-h3").pricing.reserve({"prompt": "p", "duration": 10}) == 2_000_000
    assert catalog.digest != shipped_catalog().digest
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CatalogError, match="cannot read a JSON document"):
        load_catalog(tmp_path / "bad.json")
