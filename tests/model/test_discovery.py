"""Models are found automatically: a walk of the model family folders, no hand-kept import list."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import recstudio_edge.model as zoo
from recstudio_edge.model import create_model, family_packages, get_model_class, list_models
from recstudio_edge.registry import MODELS

MODEL_DIR = Path(zoo.__file__).parent


def test_every_model_file_is_found():
    names = list_models()
    assert {"BPR", "Pop", "LightGCN", "SASRec", "Caser", "DIN", "PINRec"} <= set(names)
    families = family_packages()
    assert {"recstudio_edge.model.general", "recstudio_edge.model.sequential", "recstudio_edge.model.ctr",
            "recstudio_edge.model.edge"} <= set(families)
    assert "recstudio_edge.model.layers" not in families
    # every file of every family folder has been imported, and every model lives in one
    for fam in families:
        for path in (MODEL_DIR / fam.rsplit(".", 1)[-1]).rglob("*.py"):
            if path.stem != "__init__":
                assert fam + "." + path.stem in sys.modules, path
    for name in names:  # the zoo's models (not those a test or a user registered) live in family folders
        module = get_model_class(name).__module__
        if module.startswith("recstudio_edge."):
            assert module.rsplit(".", 1)[0] in families, (name, module)


def test_no_hand_kept_import_list():
    """model/__init__.py imports no model family; a family folder's __init__.py imports nothing."""
    fams = {f.rsplit(".", 1)[-1] for f in family_packages()}
    tree = ast.parse((MODEL_DIR / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            named = {(node.module or "").split(".")[0]} | {a.name for a in node.names}
            assert not fams & named, f"model/__init__.py:{node.lineno} imports {fams & named}"
    for fam in fams:
        tree = ast.parse((MODEL_DIR / fam / "__init__.py").read_text())
        imports = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not imports, f"model/{fam}/__init__.py imports at lines {imports}"


def test_a_new_family_folder_with_one_file_is_found(tmp_path, monkeypatch):
    fam = tmp_path / "planted_family"
    fam.mkdir()
    (fam / "__init__.py").write_text("")
    (fam / "echo.py").write_text(
        "import torch\n"
        "from recstudio_edge.model.towers import TwoTower\n"
        "from recstudio_edge.registry import register_model\n\n\n"
        "@register_model\n"
        "class PlantedEcho(TwoTower):\n"
        "    def query(self, batch):\n"
        "        return self.item_emb(batch['user_id'] % self.num_items)\n")
    monkeypatch.setattr(zoo, "__path__", [*zoo.__path__, str(tmp_path)])
    monkeypatch.setattr(zoo, "_found", False)
    try:
        assert "recstudio_edge.model.planted_family" in family_packages()
        assert "PlantedEcho" in list_models()
        m = create_model("plantedecho", num_users=3, num_items=5, embed_dim=4, topk=[2])
        assert type(m).__module__ == "recstudio_edge.model.planted_family.echo"
        with pytest.raises(TypeError, match="embed_dimm.*embed_dim"):
            create_model("PlantedEcho", num_users=3, num_items=5, embed_dimm=4)
    finally:
        MODELS._table.pop("plantedecho", None)
        for name in [n for n in sys.modules if n.startswith("recstudio_edge.model.planted_family")]:
            del sys.modules[name]


def test_unknown_model_names_the_closest():
    with pytest.raises(KeyError, match="unknown model 'SASRecc': did you mean 'SASRec'"):
        get_model_class("SASRecc")
