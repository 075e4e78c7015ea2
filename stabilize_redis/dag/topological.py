"""stabilize's ``dag.topological`` import path; the graph rules live in ``models.topology``
(the models use them, and models import nothing above themselves)."""

from stabilize_redis.models.topology import (
    CircularDependencyError,
    InvalidStageGraphError,
    StageFilter,
    find_initial_stages,
    find_terminal_stages,
    get_execution_layers,
    is_top_level,
    topological_sort,
    validate_dag,
    validate_stage_graph,
)

__all__ = ["CircularDependencyError", "InvalidStageGraphError", "StageFilter", "find_initial_stages",
           "find_terminal_stages", "get_execution_layers", "is_top_level", "topological_sort", "validate_dag",
           "validate_stage_graph"]
