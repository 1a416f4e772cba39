"""Label table: integer id <-> structure name, category and display colour.

Ids 1-117 follow TotalSegmentator v2 ``total``; ids >= 200 are surgtwin's own for structures
``total`` lacks (body, subcutaneous fat, skeletal muscle, liver tumour, hepatic veins).
See ``assets/labels.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, LabelError
from .resources import assets_dir

#: Hepatic structures simulated together as one conforming liver mesh.
LIVER_STRUCTURES = ("liver", "liver_tumor", "hepatic_vein", "portal_vein_and_splenic_vein")


@dataclass(frozen=True)
class Label:
    id: int
    name: str
    category: str = "organ"
    color: tuple[int, int, int] = (200, 180, 140)


@dataclass
class LabelTable:
    """Mapping between label ids and structure names."""

    labels: dict[int, Label] = field(default_factory=dict)

    @classmethod
    def default(cls) -> "LabelTable":
        text = (assets_dir() / "labels.json").read_text()
        return cls.from_json_dict(json.loads(text))

    @classmethod
    def from_json_dict(cls, data: dict) -> "LabelTable":
        if isinstance(data, dict) and "labels" in data:
            items = data["labels"]
        elif isinstance(data, dict):  # plain {"1": "spleen", ...} as TotalSegmentator writes
            items = [{"id": int(k), "name": v} for k, v in data.items()]
        else:
            raise InputError("label table must be a JSON object")
        table = {}
        for it in items:
            lab = Label(int(it["id"]), str(it["name"]), it.get("category", "organ"),
                        tuple(it.get("color", (200, 180, 140))))
            table[lab.id] = lab
        return cls(table)

    @classmethod
    def load(cls, path: str | Path) -> "LabelTable":
        path = Path(path)
        try:
            return cls.from_json_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise InputError(f"label table not found: {path}") from None
        except (json.JSONDecodeError, KeyError, ValueError) as exc:
            raise InputError(f"label table {path} is not valid: {exc}") from None

    def to_json_dict(self) -> dict:
        return {"labels": [{"id": l.id, "name": l.name, "category": l.category, "color": list(l.color)}
                           for l in sorted(self.labels.values(), key=lambda l: l.id)]}

    def id_of(self, name: str) -> int:
        for lab in self.labels.values():
            if lab.name == name:
                return lab.id
        raise LabelError(f"no structure named '{name}' in the label table")

    def name_of(self, label_id: int) -> str:
        lab = self.labels.get(int(label_id))
        return lab.name if lab else f"label_{int(label_id)}"

    def ids_in_category(self, category: str) -> list[int]:
        return sorted(l.id for l in self.labels.values() if l.category == category)

    def subset(self, ids) -> "LabelTable":
        ids = {int(i) for i in ids}
        return LabelTable({i: l for i, l in self.labels.items() if i in ids})

    def __contains__(self, name: str) -> bool:
        return any(l.name == name for l in self.labels.values())
