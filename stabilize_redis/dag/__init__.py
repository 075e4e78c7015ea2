"""Pure graph utilities over stages: ordering, validation and output merging."""

from stabilize_redis.dag.outputs import merge_outputs_in_order
from stabilize_redis.dag.topological import (
    CircularDependencyError,
    InvalidStageGraphError,
    find_initial_stages,
    find_terminal_stages,
    get_execution_layers,
    is_top_level,
    topological_sort,
    validate_dag,
    validate_stage_graph,
)

__all__ = [
    "CircularDependencyError",
    "InvalidStageGraphError",
    "find_initial_stages",
    "find_terminal_stages",
    "get_execution_layers",
    "is_top_level",
    "merge_outputs_in_order",
    "topological_sort",
    "validate_dag",
    "validate_stage_graph",
]
