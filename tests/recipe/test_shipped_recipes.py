"""Every shipped recipe validates, matches its folder's stage, and names the command that runs it."""

import pytest

from umt_cli.recipe.catalog import shipped_recipes
from umt_cli.recipe.load import read_toml, validate_recipe

RECIPES = shipped_recipes()
FOLDER_STAGE = {"data": "prepare-data", "quickstart": None, "distill": "distill", "pretrain": "pretrain",
                "finetune": "finetune"}  # fmt: skip
COMMAND = {"distill": "umt distill", "pretrain": "umt pretrain", "finetune": "umt finetune",
           "prepare-data": "umt prepare-data"}  # fmt: skip


def test_recipes_are_found():
    assert {"k710", "quickstart/distill", "data/kinetics710", "data/synthetic"} <= set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_recipe_validates_and_is_self_describing(name):
    path = RECIPES[name]
    recipe = validate_recipe(read_toml(path), str(path))
    folder = name.split("/")[0] if "/" in name else None
    expected_stage = FOLDER_STAGE.get(folder) if folder else "distill"
    if expected_stage is not None:
        assert recipe.stage == expected_stage
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert header, f"{name} has no header comment"
    assert any(line.startswith("# Run:") and COMMAND[recipe.stage] in line for line in header)
