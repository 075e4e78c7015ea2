"""Stage definition builders (stabilize's ``stabilize.stages``): see ``stages.builder``."""

from stabilize_redis.stages.builder import (
    ON_FAILURE_KEY,
    NoOpStageBuilder,
    StageDefinitionBuilder,
    StageDefinitionBuilderFactory,
    StageGraphBuilder,
    get_builder,
    get_default_factory,
    register_builder,
)

__all__ = [
    "ON_FAILURE_KEY",
    "NoOpStageBuilder",
    "StageDefinitionBuilder",
    "StageDefinitionBuilderFactory",
    "StageGraphBuilder",
    "get_builder",
    "get_default_factory",
    "register_builder",
]
