"""Recipes: TOML files checked by strict pydantic models (no torch import here, so the CLI starts fast)."""

from umt_cli.recipe.base import SCHEMA_VERSION, Recipe, Section
from umt_cli.recipe.load import apply_overrides, dump_resolved, load_recipe, validate_recipe
from umt_cli.recipe.recipes import AnyRecipe, DistillRecipe, FinetuneRecipe, PrepareDataRecipe, PretrainRecipe

__all__ = [
    "SCHEMA_VERSION",
    "AnyRecipe",
    "DistillRecipe",
    "FinetuneRecipe",
    "PrepareDataRecipe",
    "PretrainRecipe",
    "Recipe",
    "Section",
    "apply_overrides",
    "dump_resolved",
    "load_recipe",
    "validate_recipe",
]
