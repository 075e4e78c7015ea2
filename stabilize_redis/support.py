"""What this engine executes and what it refuses: one table for every field of stabilize's
models, every message type and field, every task-result directive and the context keys
stabilize gives a meaning to.

An entry either is executed (``note`` says how), is run-time state (stored as given and resumed
from: statuses, times, versions), or ``needs`` a :class:`Feature` the engine does not execute
yet. A value that uses such a feature (by default: any value other than the field's default;
``refuse`` narrows that, e.g. only ``JoinType.MULTI_MERGE`` of ``join_type``) is refused where
it enters, never stored and ignored:

* a workflow by ``client.submit``, ``store.store`` and ``Orchestrator.start``
  (``check_workflow``: ``WorkflowValidationError`` naming the stage and the field);
* a message by ``RedisQueue.push`` / ``client.queue.push`` / ``Orchestrator`` (``check_message``:
  a ValueError naming the type or field; a type is accepted once a handler for it is registered
  in this process, see ``accept_message_type``); a raw stream entry of a type without a handler
  is still dead-lettered ``no_handler`` by the dispatcher;
* a task result by failing the task with an error naming the directive (``result_refusal``).

Building a feature is one line here: set its ``executed=True`` (and name its tests).
``tests/unit/test_support_matrix.py`` fails for any model or message field without an entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.stage import JoinType, SplitType, StageExecution
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.models.workflow import PausedDetails, Trigger, Workflow
from stabilize_redis.queue.messages import MESSAGE_TYPES, Message
from stabilize_redis.tasks.result import TaskResult


class NotExecutedError(ValueError):
    """A setting, message or task result that uses something the engine does not execute; the
    text names where (stage, field, message type or directive) and why."""


@dataclass(frozen=True)
class Feature:
    """Something stabilize's model offers. ``refusal`` completes "<field>: ..." in the error;
    ``executed`` flips every entry that needs it from refused to accepted."""

    name: str
    refusal: str
    executed: bool = False
    tests: tuple[str, ...] = ()


_YET = "not executed by this engine yet"
JUMPS = Feature("jumps", f"jumps between stages (TaskResult.jump_to / redirect, JumpToStage, loops) are {_YET}",
                executed=True, tests=(
                    "tests/integration/test_jumps.py::"
                    "test_a_loop_back_reruns_the_region_and_each_pass_sees_the_fresh_upstream_values",
                    "tests/processes/test_jump_races.py::"
                    "test_a_jump_inside_a_fan_out_discards_the_branches_still_running"))
SYNTHETIC = Feature("synthetic stages", f"synthetic before/after stages (parent_stage_id, ContinueParentStage) are {_YET}",
                    executed=True, tests=("tests/integration/test_synthetic_stages.py::test_before_stages_run_in_dependency_order_then_the_tasks_then_the_after_stages",
                                         "tests/integration/test_synthetic_stages.py::test_on_failure_stages_run_in_order_only_when_the_stage_fails"))
SYNTHETIC_OWNER = Feature("synthetic stage without owner", "a synthetic stage (parent_stage_id) needs a "
                          "synthetic_stage_owner (STAGE_BEFORE or STAGE_AFTER) to say when it runs")
RESTART = Feature("restart", f"restarting a stage (RestartStage) is {_YET}",
                  executed=True, tests=(
                      "tests/integration/test_restart.py::"
                      "test_restart_after_a_terminal_failure_reruns_the_stage_and_its_downstreams_and_the_workflow_succeeds",
                      "tests/integration/test_restart.py::test_restart_re_arms_completion_exactly_once",
                      "tests/integration/test_restart.py::test_a_stale_message_of_the_old_run_is_discarded"))
SIGNALS = Feature("signals", f"signals (TaskResult.suspend, SignalStage; WCP-23/24) are {_YET}",
                  executed=True, tests=(
                      "tests/integration/test_signals.py::test_a_suspended_stage_resumes_once_with_the_signal_data",
                      "tests/integration/test_signals.py::"
                      "test_a_persistent_signal_sent_before_the_suspension_resumes_it_at_once_and_exactly_once",
                      "tests/processes/test_signal_races.py::"
                      "test_persistent_signals_racing_the_suspension_resume_each_stage_exactly_once"))
MUTEX = Feature("mutex", f"mutual exclusion (mutex_key; WCP-17/39/40) is {_YET}", executed=True, tests=(
    "tests/integration/test_mutex.py::test_stages_sharing_a_mutex_never_overlap_and_waiters_run_in_arrival_order",
    "tests/integration/test_mutex.py::test_a_holder_that_fails_hands_the_mutex_to_the_next_waiter",
    "tests/processes/test_mutex_races.py::test_mutex_holders_never_overlap_across_worker_processes"))
DEFERRED_CHOICE = Feature("deferred choice", f"deferred choice (deferred_choice_group; WCP-16) is {_YET}",
                          executed=True, tests=(
    "tests/integration/test_deferred_choice.py::test_the_first_start_wins_and_its_siblings_are_canceled_without_running",
    "tests/processes/test_mutex_races.py::test_exactly_one_deferred_choice_branch_runs_per_workflow"))
EXCLUSION_PLACES = ("a mutex_key or deferred_choice_group on a synthetic stage or a MULTI_MERGE join is "
                    f"{_YET}")
MILESTONES = Feature("milestones", f"milestones (milestone_ref_id/milestone_status; WCP-18) are {_YET}",
                     executed=True, tests=(
    "tests/integration/test_milestones.py::test_a_waiting_watcher_is_released_by_the_milestones_start",
    "tests/integration/test_milestones.py::test_a_watcher_whose_milestone_has_finished_is_skipped_without_running",
    "tests/integration/test_milestones.py::test_a_watcher_deciding_while_the_milestone_starts_conflicts_and_starts"))
MILESTONE_PLACES = f"a milestone on a synthetic stage or a MULTI_MERGE join is {_YET}"
CANCEL_REGIONS = Feature("cancel regions", f"cancel regions (cancel_region, CancelRegion; WCP-25) are {_YET}",
                         executed=True, tests=(
    "tests/integration/test_cancel_regions.py::"
    "test_canceling_a_region_cancels_its_running_and_unstarted_stages_and_the_others_finish",
    "tests/integration/test_cancel_regions.py::test_a_region_parents_synthetic_children_are_canceled_with_it",
    "tests/processes/test_region_races.py::test_a_canceled_regions_running_tasks_see_their_tokens_across_processes"))
MULTI_INSTANCE = Feature("multi-instance", f"multi-instance stages (mi_config, AddMultiInstance; WCP-12..15) are {_YET}",
                         executed=True, tests=(
    "tests/integration/test_multi_instance.py::test_a_fixed_group_runs_every_instance_then_its_join_once",
    "tests/integration/test_multi_instance.py::"
    "test_a_quorum_join_with_cancel_remaining_cancels_the_unfinished_instances_and_the_workflow_succeeds",
    "tests/integration/test_multi_instance.py::test_an_instance_added_while_the_parent_runs_is_waited_for_by_the_join",
    "tests/processes/test_multi_instance_races.py::test_a_hundred_racing_adds_all_land_in_the_join_count"))
MULTI_MERGE = Feature("multi-merge", f"JoinType.MULTI_MERGE (WCP-8: one run per upstream completion) is {_YET}",
                      executed=True, tests=("tests/integration/test_multi_merge.py::"
                                            "test_a_multi_merge_runs_once_per_upstream_each_over_that_upstreams_outputs",))
REDUCERS = Feature("output reducers", f"output reducers (output_reducers, context['_output_reducers']) are {_YET}",
                   executed=True, tests=(
                       "tests/integration/test_reducers.py::"
                       "test_collect_in_a_two_of_three_quorum_gathers_exactly_the_findings_that_counted",
                       "tests/integration/test_reducers.py::test_the_fused_single_upstream_start_applies_the_reducer",
                       "tests/integration/test_reducers.py::test_a_failing_reducer_fails_the_join_naming_the_stage_and_key"))
CONCURRENCY = Feature("concurrency limits", "workflow concurrency limits (is_limit_concurrent, "
                      f"max_concurrent_executions, keep_waiting_pipelines, StartWaitingWorkflows) are {_YET}",
                      executed=True, tests=(
                          "tests/integration/test_concurrency_limits.py::"
                          "test_over_the_limit_workflows_wait_buffered_and_start_in_arrival_order",
                          "tests/processes/test_limit_races.py::test_a_limit_of_three_holds_across_processes_and_a_kill"))
SUB_WORKFLOWS = Feature("sub-workflows", f"sub-workflows (context['_sub_workflow_config']; WCP-22) are {_YET}",
                        executed=True, tests=(
                            "tests/integration/test_sub_workflows.py::"
                            "test_a_child_in_another_partition_runs_and_its_outputs_finish_the_parent",))
SCHEDULED = Feature("scheduled start", "a stage does not wait for its scheduled_time (stabilize only stores it); "
                    "use a WaitTask")
CLEANUP = Feature("cleanup_on_failure", "cleanup_on_failure is not executed; use Task.on_cleanup")
FINALIZERS = Feature("finalizers", "stage finalizers are not executed; use Task.on_cleanup")
TASK_LOOPS = Feature("task loops", "task loops (loop_start/loop_end) are not executed (nor by stabilize)")
CONFIG_VERSION = Feature("config_version", "config_version is not stored; put it in the workflow context or trigger")
MESSAGE_MAX_ATTEMPTS = Feature("per-message max_attempts", "a message's own max_attempts is not honoured: "
                               "EngineConfig.message_max_attempts (STABILIZE_MESSAGE_MAX_ATTEMPTS) bounds every message")
SCOPE_RULE = Feature("mutex_scope", "mutex_scope is 'workflow' or 'global', and 'global' needs a mutex_key")
THRESHOLD_RULE = Feature("join_threshold outside N_OF_M", "join_threshold is read only by a JoinType.N_OF_M join")
SPLIT_RULE = Feature("split_conditions outside OR", "split_conditions are read only by a SplitType.OR split")
FIRST_TASK_RULE = Feature("stage_start after the first task", "only a stage's first task starts it")
LAST_TASK_RULE = Feature("stage_end before the last task", "a task before the last may not end the stage "
                         "(the tasks after it would never run)")
NOT_AN_OUTCOME = Feature("not a task outcome", "this status is not a task outcome; return success, running, "
                         "terminal, failed_continue, skipped, canceled or stopped")

FEATURES: tuple[Feature, ...] = (
    JUMPS, SYNTHETIC, SYNTHETIC_OWNER, RESTART, SIGNALS, MUTEX, DEFERRED_CHOICE, MILESTONES, CANCEL_REGIONS,
    MULTI_INSTANCE,
    MULTI_MERGE, REDUCERS, CONCURRENCY, SUB_WORKFLOWS, SCHEDULED, CLEANUP, FINALIZERS, TASK_LOOPS,
    CONFIG_VERSION, MESSAGE_MAX_ATTEMPTS, SCOPE_RULE, THRESHOLD_RULE, SPLIT_RULE, FIRST_TASK_RULE, LAST_TASK_RULE,
    NOT_AN_OUTCOME,
)


class Slot(NamedTuple):
    """Where a value sits: the object holding the field, its parent and its position there (a
    task: its stage and position; otherwise ``None`` and 0)."""

    owner: Any
    parent: Any = None
    position: int = 0


Refuse = Callable[[Any, Slot], bool]
NOT_DEFAULT = "not default"
"""``Entry.refuse`` marker: any value other than the field's default uses the feature."""
ALWAYS = "always"
"""``Entry.refuse`` marker of a message type: every message of the type uses the feature."""


@dataclass(frozen=True)
class Entry:
    """One field, message type, context key or directive. ``needs`` None: executed (``state``:
    run-time state rather than a setting). Otherwise values for which ``refuse`` holds (a
    predicate, or NOT_DEFAULT) are refused while ``needs`` is not executed; ``example`` is such
    a value (the test suite builds one from it)."""

    note: str
    needs: Feature | None = None
    refuse: Refuse | str | None = None
    example: Any = None
    state: bool = False
    test: str = ""

    @property
    def refused(self) -> bool:
        """True while some value of this entry is refused."""
        return self.needs is not None and not self.needs.executed and self.refuse is not None


def done(note: str, test: str = "") -> Entry:
    return Entry(note, test=test)


def state(note: str = "run-time state: stored as given, set by the engine as the workflow runs") -> Entry:
    return Entry(note, state=True)


def uses(feature: Feature, example: Any, note: str = "") -> Entry:
    """A field that only the feature reads: any non-default value is refused."""
    return Entry(note or feature.refusal, feature, NOT_DEFAULT, example)


def partly(note: str, feature: Feature, refuse: Refuse, example: Any, test: str = "") -> Entry:
    """An executed field some of whose values need ``feature``."""
    return Entry(note, feature, refuse, example, test=test)


def needs_all(feature: Feature) -> Entry:
    """A message type that only the feature executes."""
    return Entry(feature.refusal, feature, ALWAYS)


def part_of(feature: Feature) -> Entry:
    """A field of a message type that is refused as a whole."""
    return Entry(f"field of a message type that needs {feature.name}", feature)


STORED = "stored and returned as given"

WORKFLOW: dict[str, Entry] = {
    "id": done("the key of the workflow's hash and partition; a second submit of an id starts nothing",
               "tests/integration/test_redelivery.py::test_submitting_the_same_workflow_twice_runs_it_once"),
    "type": done("stored; every message carries it as execution_type"),
    "application": done("stored; a filter of client.list and store.search"),
    "name": done(STORED),
    "status": state("NOT_STARTED is started at submit; any other status is stored as given (store.store of "
                    "a workflow in flight) and the handlers act on it by their status rules"),
    "stages": done("the graph: see the stage entries"),
    "context": done("workflow context (completeOtherBranchesThenFail); values converted like stabilize's "
                    "json default=str (see codec.TEXT_TYPES)"),
    "trigger": done(STORED),
    "start_time": state(),
    "end_time": state(),
    "start_time_expiry": done("a workflow not started by then is canceled instead of started"),
    "is_canceled": done("a workflow submitted canceled is canceled, not started",
                        "tests/integration/test_task_results.py::test_cancel_of_a_workflow_that_never_started"),
    "canceled_by": state(),
    "cancellation_reason": state(),
    "paused": state(),
    "pipeline_config_id": done("stored; a filter of client.list and store.search"),
    "is_limit_concurrent": done("with pipeline_config_id and max_concurrent_executions > 0: the workflow "
                                "starts only with a slot of its config's limit (decisions.concurrency)"),
    "max_concurrent_executions": done("the limit: workflows of one pipeline_config_id running at once"),
    "keep_waiting_pipelines": done("over the limit: BUFFERED until a slot frees (else CANCELED)"),
    "origin": done(STORED),
    "config_version": uses(CONFIG_VERSION, "v2"),
}

STAGE: dict[str, Entry] = {
    "id": done("the stage's field in the workflow hash"),
    "ref_id": done("the graph key: requisites, split conditions and expressions name stages by it"),
    "type": done("the stage definition builder consulted (stabilize_redis.stages.register_builder): tasks for "
                 "a stage given none, and its synthetic stages",
                 "tests/integration/test_synthetic_stages.py::test_a_builder_gives_a_stage_without_tasks_its_tasks_and_its_stages"),
    "name": done(STORED),
    "status": state(),
    "context": done("the stage's input, over its ancestors' outputs (stageEnabled, stageTimeoutMs, manualSkip, "
                    "continuePipelineOnFailure, failPipeline); values converted like json default=str",
                    "tests/integration/test_task_results.py::"
                    "test_success_outputs_reach_downstream_context_but_stage_context_stays_local"),
    "outputs": done("merged into every descendant's context",
                    "tests/integration/test_quickstart_and_parallel.py::"
                    "test_parallel_diamond_deploy_sees_merged_ancestor_outputs"),
    "tasks": done("run in order; the stage settles from their statuses"),
    "requisite_stage_ref_ids": done("the stage waits for these upstream stages (its join)",
                                    "tests/integration/test_join_concurrency.py::"
                                    "test_and_join_starts_once_with_three_threaded_processors"),
    "parent_stage_id": partly("a synthetic stage of that parent: before-stages run before its tasks, after-stages "
                              "after them on success (on-failure ones on failure); its children's completion "
                              "counts toward it, never toward the workflow's", SYNTHETIC_OWNER,
                              lambda v, s: v is not None and s.owner.synthetic_stage_owner is None,
                              "parent-stage-id", "tests/integration/test_synthetic_stages.py::test_nested_synthetic_stages_run_innermost_first"),
    "synthetic_stage_owner": done("STAGE_BEFORE or STAGE_AFTER: when a synthetic stage runs (without "
                                  "parent_stage_id it is a plain top-level stage)"),
    "start_time": state(),
    "end_time": state(),
    "start_time_expiry": done("a stage not started by then is skipped"),
    "scheduled_time": uses(SCHEDULED, 1_700_000_000_000),
    "version": state("optimistic-locking counter kept by the store"),
    "cleanup_on_failure": uses(CLEANUP, True),
    "finalizer_names": uses(FINALIZERS, ["release-lock"]),
    "join_type": partly("AND, OR (branches an OR-split skipped count as done), DISCRIMINATOR and N_OF_M joins "
                        "are released by a counter in the commit", MULTI_MERGE,
                        lambda v, _: v is JoinType.MULTI_MERGE, JoinType.MULTI_MERGE,
                        "tests/integration/test_join_concurrency.py::"
                        "test_partial_joins_start_once_with_three_threaded_processors"),
    "join_threshold": partly("upstream completions an N_OF_M join needs", THRESHOLD_RULE,
                             lambda v, s: v != 0 and s.owner.join_type is not JoinType.N_OF_M, 2),
    "split_type": done("AND activates every downstream, OR those whose split condition holds",
                       "tests/integration/test_expression_failures.py::"
                       "test_failing_split_condition_skips_only_its_branch_and_reports_the_error"),
    "split_conditions": partly("an OR split's expression per downstream ref id", SPLIT_RULE,
                               lambda v, s: bool(v) and s.owner.split_type is not SplitType.OR, {"next": "ok"}),
    "mi_config": done("makes the stage a multi-instance parent: its instances and join must be the shape the "
                      "config says (stages.multi_instance_builder builds it)",
                      "tests/integration/test_multi_instance.py::test_a_fixed_group_runs_every_instance_then_its_join_once"),
    "deferred_choice_group": done("of the top-level stages of one group, the first whose start commits runs; that "
                                  "commit cancels the others (decisions.deferred_choice)",
                                  "tests/integration/test_deferred_choice.py::"
                                  "test_racing_starts_of_two_siblings_cannot_both_win"),
    "milestone_ref_id": done("with milestone_status: the stage starts only while the top-level stage of this ref "
                             "id is in that status, is skipped once it has passed it, and waits otherwise - woken "
                             "by the milestone's status change (decisions.milestones)",
                             "tests/integration/test_milestones.py::"
                             "test_a_watcher_of_running_starts_while_the_milestone_runs"),
    "milestone_status": done("the status name a milestone_ref_id's stage must be in (NOT_STARTED, RUNNING or a "
                             "final status; PAUSED and SUSPENDED are decided only when the watcher is woken)"),
    "mutex_key": done("top-level stages of one workflow sharing it never run at the same time; a blocked one "
                      "waits in the mutex's queue and is started by the release (decisions.mutex)",
                      "tests/integration/test_mutex.py::test_racing_starts_cannot_both_take_the_mutex"),
    "mutex_scope": partly("'workflow' (default): mutex_key excludes within the workflow; 'global': across every "
                          "workflow of the namespace (decisions.global_mutex)", SCOPE_RULE,
                          lambda v, slot: v not in ("workflow", "global") or (v == "global" and not slot.owner.mutex_key),
                          "everywhere", "tests/integration/test_global_mutex.py::"
                          "test_stages_of_different_workflows_sharing_a_global_mutex_never_overlap"),
    "cancel_region": done("CancelRegion cancels every unfinished stage tagged with it, and their synthetic "
                          "children, in one commit (handlers.cancel_region)",
                          "tests/integration/test_cancel_regions.py::"
                          "test_canceling_a_region_cancels_its_running_and_unstarted_stages_and_the_others_finish"),
    "output_reducers": done("a join's context gets, per key, the named reducer (collect, sum, merge, first, last, "
                            "... or register_reducer) over the values of the upstreams that released it",
                            "tests/integration/test_reducers.py::"
                            "test_sum_merge_first_last_combine_the_branches_in_topological_order"),
    "_execution": done("the in-memory link to the workflow; not stored"),
}

TASK: dict[str, Entry] = {
    "id": done("the task's identity within its stage; RunTask and cancellation name it"),
    "name": done(STORED),
    "implementing_class": done("the TaskRegistry key of the implementation; an unknown one fails the task",
                               "tests/integration/test_task_results.py::"
                               "test_unregistered_task_fails_the_workflow_with_a_clear_error"),
    "status": state(),
    "start_time": state(),
    "end_time": state(),
    "stage_start": partly("set by the engine on the first task", FIRST_TASK_RULE,
                          lambda v, s: bool(v) and s.position != 0, True),
    "stage_end": partly("set by the engine on the last task", LAST_TASK_RULE,
                        lambda v, s: bool(v) and s.position != len(s.parent.tasks) - 1, True),
    "loop_start": uses(TASK_LOOPS, True),
    "loop_end": uses(TASK_LOOPS, True),
    "task_exception_details": state(),
    "version": state("optimistic-locking counter kept by the store"),
    "_stage": done("the in-memory link to the stage; not stored"),
}

MULTI_INSTANCE_CONFIG: dict[str, Entry] = {
    "count": done("the number of instance stages the group has (checked at submit; AddMultiInstance raises it)",
                  "tests/integration/test_multi_instance.py::test_a_group_not_the_shape_its_config_says_is_refused"),
    "count_from_context": done("the parent context key the count was read from (checked against the count)"),
    "sync_on_complete": done("the group has a join (<ref>_mi_join) waiting for its instances; without, the "
                             "instances just run (WCP-12)",
                             "tests/integration/test_multi_instance.py::"
                             "test_without_sync_the_instances_run_and_the_workflow_ends_after_them"),
    "allow_dynamic": done("AddMultiInstance adds instances until the join fires",
                          "tests/integration/test_multi_instance.py::"
                          "test_an_instance_added_after_the_join_fired_is_rejected_with_an_event"),
    "collection_from_context": done("the parent context key of the list the instances were built from (one per "
                                    "item; checked against the count)"),
    "join_threshold": done("the join is N_OF_M over the instances with this threshold (WCP-34)"),
    "cancel_remaining": done("the commit that starts the join cancels the unfinished instances (tokens canceled, "
                             "not-started ones never run); the workflow counts them as not taken",
                             "tests/integration/test_multi_instance.py::"
                             "test_a_quorum_join_with_cancel_remaining_cancels_the_unfinished_instances_and_the_"
                             "workflow_succeeds"),
}

TRIGGER: dict[str, Entry] = {name: done(STORED) for name in ("type", "user", "parameters", "artifacts", "payload")}
PAUSED_DETAILS: dict[str, Entry] = {name: state() for name in ("paused_by", "pause_time", "resume_time", "paused_ms")}

MODELS: dict[type, dict[str, Entry]] = {
    Workflow: WORKFLOW, StageExecution: STAGE, TaskExecution: TASK, MultiInstanceConfig: MULTI_INSTANCE_CONFIG,
    Trigger: TRIGGER, PausedDetails: PAUSED_DETAILS,
}
"""Every stabilize model dataclass and its fields."""

STAGE_CONTEXT: dict[str, Entry] = {
    "stageEnabled": done("False or a false expression skips the stage"),
    "stageTimeoutMs": done("ends a task that runs longer",
                           "tests/integration/test_task_results.py::test_stage_timeout_ms_ends_a_task_that_never_finishes"),
    "manualSkip": done("skips the stage's tasks"),
    "continuePipelineOnFailure": done("a failure becomes FAILED_CONTINUE",
                                      "tests/integration/test_task_results.py::"
                                      "test_continue_pipeline_on_failure_turns_terminal_into_failed_continue"),
    "failPipeline": done("False turns a failure into STOPPED"),
    "_max_jumps": done("jumps allowed when the workflow context sets none (default 10)"),
    "_jump_count": state("jumps taken so far (on the jumping stage and its target)"),
    "_jump_history": state("the jumps taken: from_stage, to_stage, jump_number, context_keys"),
    "_jump_outputs": state("a jump target's: the jump's outputs"),
    "jump_error": state("why a stage's jump failed (missing target, too many jumps)"),
    "_on_failure_stage": state("set on the synthetic stages a builder's on_failure_stages built: they run "
                               "only when their parent fails"),
    "beforeStagePlanningFailed": state("the stage's builder (or a stage it built) failed; the stage fails"),
    "_signal_name": state("the name of the signal that last resumed the stage (SignalStage)"),
    "_signal_data": state("the data of the signal that last resumed the stage (SignalStage)"),
    "_output_reducers": done("output_reducers as stored: read when the field is empty"),
    "_sub_workflow_config": done("SubWorkflowTask: the child workflow as data"),
    "_sub_workflow_id": state("SubWorkflowTask: the child this run of the stage started"),
    "_recursion_depth": done("SubWorkflowTask: the stage's recursion depth (0 at the top)"),
    "_max_recursion_depth": done("SubWorkflowTask: the deepest child allowed (default 10)"),
}
"""Stage context keys stabilize gives a meaning to (any other key is the user's data)."""

WORKFLOW_CONTEXT: dict[str, Entry] = {
    "completeOtherBranchesThenFail": done("a failure lets the other branches finish before the workflow fails"),
    "_max_jumps": done("jumps allowed in the workflow (default 10; 0 forbids them); one more fails the "
                       "jumping stage TERMINAL", "tests/integration/test_jumps.py::"
                       "test_a_loop_past_max_jumps_fails_the_workflow_terminal_with_jump_error"),
}
"""Workflow context keys stabilize gives a meaning to."""

_DIAGNOSTIC = "a diagnostic marker: dead-lettered with reason diagnostic_marker, as a record"
MESSAGE_TYPE_ENTRIES: dict[str, Entry] = {
    "StartWorkflow": done("NOT_STARTED -> RUNNING, starts the initial stages"),
    "CompleteWorkflow": done("settles the workflow's status from its top-level stages"),
    "CancelWorkflow": done("cancels the workflow and signals its running tasks"),
    "StartWaitingWorkflows": done("fills a limit's free slots from its waiters; purge_queue cancels the rest"),
    "StartStage": done("starts a ready stage and its first task"),
    "CompleteStage": done("settles a stage and releases its downstreams"),
    "SkipStage": done("skips a stage and releases its downstreams"),
    "CancelStage": done("cancels a stage"),
    "RestartStage": done("resets a finished stage and its downstream scope, reopens the workflow and starts "
                         "the stage again, in one commit",
                         "tests/integration/test_restart.py::test_restart_re_arms_completion_exactly_once"),
    "ResumeStage": done("resumes a paused stage"),
    "ContinueParentStage": done("moves a stage through its synthetic phases; released by the commit that "
                                "finishes a phase's last child",
                                "tests/integration/test_synthetic_stages.py::test_a_failing_before_stage_prevents_the_parent_tasks_and_its_after_stages"),
    "StartSubWorkflow": done("creates and starts a child workflow once (its id is its parent stage's); sent by "
                             "the commit that suspends a SubWorkflowTask"),
    "GlobalMutexAcquire": done("asks a global mutex for a stage's run; granted with a new fence or queued"),
    "GlobalMutexRelease": done("gives a global mutex back (a stale fence changes nothing) or leaves its waiters; "
                               "the first waiter gets it"),
    "GlobalMutexGranted": done("the stage records its fence and starts; a grant it no longer waits for goes back"),
    "LimitAcquire": done("asks a pipeline config's concurrency limit for a slot; answered granted, buffered or "
                         "refused"),
    "LimitRelease": done("frees a limited workflow's slot (or place in line); the first waiters take free slots"),
    "LimitDecision": done("the limit's answer: starts the workflow, shows it BUFFERED, or cancels it"),
    "RelayMessage": done("an outbox entry: forwarded to its target partition once per message id, then acked"),
    "JumpToStage": done("resets the region a jump re-runs and sends the target its StartStage, in one commit",
                        "tests/integration/test_jumps.py::test_a_pushed_jump_to_stage_reruns_a_finished_stage"),
    "SignalStage": done("resumes a SUSPENDED stage's task with the signal; a persistent signal to a stage not "
                        "suspended is buffered (bounded) and consumed by the commit that suspends it; a transient "
                        "one is discarded", "tests/integration/test_signals.py::"
                        "test_a_transient_signal_sent_early_is_discarded_and_says_so"),
    "CancelRegion": done("cancels a region's unfinished stages in one commit; running tasks' tokens are canceled",
                         "tests/processes/test_region_races.py::"
                         "test_a_canceled_regions_running_tasks_see_their_tokens_across_processes"),
    "AddMultiInstance": done("adds an instance to a dynamic group and makes its join wait for it, in one commit; "
                             "rejected with an event once the join fired",
                             "tests/integration/test_multi_instance.py::"
                             "test_an_instance_added_after_the_join_fired_is_rejected_with_an_event"),
    "StartTask": done("starts a task"),
    "RunTask": done("runs a task's code once per delivery and commits its result"),
    "CompleteTask": done("records a task's final status, then the next task or the stage's completion"),
    "PauseTask": done("pauses a task of a paused workflow"),
    "InvalidWorkflowId": done(_DIAGNOSTIC),
    "InvalidStageId": done(_DIAGNOSTIC),
    "InvalidTaskId": done(_DIAGNOSTIC),
    "InvalidTaskType": done(_DIAGNOSTIC),
}
"""Every message type: executed by a built-in handler, or refused at push."""

_FINAL_TASK_STATUSES = frozenset({
    WorkflowStatus.SUCCEEDED, WorkflowStatus.FAILED_CONTINUE, WorkflowStatus.SKIPPED, WorkflowStatus.STOPPED,
    WorkflowStatus.TERMINAL, WorkflowStatus.CANCELED})

MESSAGE_FIELDS: dict[str, Entry] = {
    "message_id": done("a message id is processed once (the dedup record)"),
    "created_at": state("informational"),
    "attempts": done("deliveries so far; a handler failure is retried until message_max_attempts"),
    "max_attempts": uses(MESSAGE_MAX_ATTEMPTS, 3),
    "last_error": state("informational: the error of the last failed delivery"),
    "last_error_type": state("informational"),
    "execution_type": done("the workflow's type"),
    "execution_id": done("the target workflow (and its partition)"),
    "stage_id": done("the target stage"),
    "task_id": done("the target task"),
    "retry_count": done("RunTask: the step of the poll backoff; informational elsewhere"),
    "user": done("CancelWorkflow: recorded as canceled_by"),
    "reason": done("CancelWorkflow: recorded as cancellation_reason"),
    "task_type": done("RunTask: the implementation to run"),
    "status": partly("CompleteTask: the task's final status", NOT_AN_OUTCOME,
                     lambda v, _: isinstance(v, WorkflowStatus) and v not in _FINAL_TASK_STATUSES,
                     WorkflowStatus.REDIRECT),
    "original_status": state("CompleteTask: informational"),
    "task_type_name": done(_DIAGNOSTIC),
    "pipeline_config_id": done("StartWaitingWorkflows and the limit messages: the config whose limit"),
    "purge_queue": done("StartWaitingWorkflows: cancel the workflows left waiting"),
    "phase": done("ContinueParentStage: STAGE_BEFORE (plan, before-stages, then the tasks) or STAGE_AFTER "
                  "(after-stages or on-failure stages, then the stage settles)"),
    "target_stage_ref_id": done("JumpToStage: the ref id of the stage to jump to"),
    "jump_context": done("JumpToStage: merged into the target's context"),
    "jump_outputs": done("JumpToStage: the target's context['_jump_outputs']"),
    "attempt_token": done("task messages and JumpToStage: the run of the stage they belong to; one of an "
                          "earlier run (before a jump or restart reset the stage) is discarded",
                          "tests/integration/test_jumps.py::test_a_stale_task_completion_after_a_jump_is_discarded"),
    "parent_execution_id": done("StartSubWorkflow: the parent workflow, told the child's result"),
    "parent_stage_id": done("StartSubWorkflow: the parent stage, told the child's result"),
    "definition": done("StartSubWorkflow: the child as data (models.definition)"),
    "message": done("RelayMessage: the message to forward"),
    "requester_id": done("LimitAcquire/LimitRelease and the global mutex messages: the workflow asking"),
    "requester_stage_id": done("global mutex messages: the stage asking"),
    "mutex_key": done("global mutex messages: the mutex"),
    "run": done("global mutex messages: the run of the stage the lock is for"),
    "fence_floor": done("GlobalMutexAcquire: a re-registering holder's fence; later fences are above it"),
    "fence": done("global mutex messages: the holder's fence (None: a waiter leaving)"),
    "maximum": done("LimitAcquire/LimitDecision: the workflow's max_concurrent_executions"),
    "keep_waiting": done("LimitAcquire: the workflow's keep_waiting_pipelines"),
    "decision": done("LimitDecision: granted, buffered or refused"),
    "signal_name": done("SignalStage: the stage context's _signal_name when it resumes"),
    "signal_data": done("SignalStage: the stage context's _signal_data when it resumes"),
    "persistent": done("SignalStage: buffer the signal if the stage is not SUSPENDED yet (else discard it)"),
    "region": done("CancelRegion: the cancel_region whose stages are canceled"),
    "instance_context": done("AddMultiInstance: the new instance's context"),
}
"""Every field of every message type, by name (a name means the same in every type)."""

JUMP_TO = "jump_to"
DIRECTIVES: dict[str, Entry] = {
    "SUCCEEDED": done("the task succeeded; its outputs flow downstream"),
    "RUNNING": done("the task runs again after its backoff",
                    "tests/integration/test_task_results.py::test_running_is_polled_until_success"),
    "FAILED_CONTINUE": done("the task failed; downstream stages still run",
                            "tests/integration/test_task_results.py::"
                            "test_failed_continue_marks_stage_and_workflow_still_succeeds"),
    "TERMINAL": done("the task failed; the stage fails by its failure policy",
                     "tests/integration/test_task_results.py::"
                     "test_terminal_fails_stage_and_workflow_and_downstream_never_starts"),
    "SKIPPED": done("the task is skipped"),
    "CANCELED": done("the task is canceled"),
    "STOPPED": done("the task stopped; the stage stops"),
    "SUSPENDED": done("TaskResult.suspend(): the task and stage wait SUSPENDED for a SignalStage (a buffered "
                      "persistent signal resumes them in the same commit)",
                      "tests/integration/test_signals.py::test_a_suspended_stage_resumes_once_with_the_signal_data"),
    "REDIRECT": done("without a target (TaskResult.redirect()) the task fails TERMINAL with context['error'], "
                     "as in stabilize"),
    JUMP_TO: done("the workflow jumps to the target stage (handlers.jump_to_stage)",
                  "tests/integration/test_jumps.py::test_a_forward_jump_skips_the_stages_in_between_and_runs_the_target"),
    "NOT_STARTED": uses(NOT_AN_OUTCOME, TaskResult(WorkflowStatus.NOT_STARTED)),
    "PAUSED": uses(NOT_AN_OUTCOME, TaskResult(WorkflowStatus.PAUSED)),
    "BUFFERED": uses(NOT_AN_OUTCOME, TaskResult(WorkflowStatus.BUFFERED)),
}
"""What a task's result asks for: each result status, and ``jump_to`` (a REDIRECT with a target)."""

RESULT_FIELDS: dict[str, Entry] = {
    "status": done("the directive: see DIRECTIVES"),
    "context": done("merged into the stage context; values converted like json default=str"),
    "outputs": done("merged into the stage outputs; values converted like json default=str"),
    "target_stage_ref_id": done("jump_to's target ref id"),
}
"""Every field of TaskResult."""


# -- checks -------------------------------------------------------------------------------------


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _always(_value: Any, _slot: Slot) -> bool:
    return True


def _differs_from(default: Any) -> Refuse:
    return lambda value, _slot: bool(value != default)


def _refused_fields(cls: type, table: Mapping[str, Entry]) -> list[tuple[str, Refuse, Feature]]:
    """(field, predicate, feature) of every entry of ``table`` that refuses some value now."""
    defaults = _defaults(cls)
    out: list[tuple[str, Refuse, Feature]] = []
    for name, entry in table.items():
        if not entry.refused:
            continue
        assert entry.needs is not None
        check = entry.refuse
        if check == ALWAYS:
            check = _always
        elif check == NOT_DEFAULT:
            check = _differs_from(defaults[name])
        assert callable(check)
        out.append((name, check, entry.needs))
    return out


def _message_fields(cls: type[Message]) -> dict[str, Entry]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: entry for name, entry in MESSAGE_FIELDS.items() if name in names}


_CHECKS = {cls: _refused_fields(cls, table) for cls, table in MODELS.items()}
_MESSAGE_FIELD_CHECKS = {cls: _refused_fields(cls, _message_fields(cls)) for cls in MESSAGE_TYPES.values()}


def _check(obj: Any, slot: Slot, where: str) -> None:
    for name, refuse, feature in _CHECKS[type(obj)]:
        if refuse(getattr(obj, name), slot):
            raise NotExecutedError(f"{where}{name}: {feature.refusal}")


def _check_context(context: Any, table: Mapping[str, Entry], where: str) -> None:
    if not isinstance(context, Mapping):
        return
    for key, entry in table.items():
        if entry.refused and key in context:
            assert entry.needs is not None
            raise NotExecutedError(f"{where}context[{key!r}]: {entry.needs.refusal}")


def check_workflow(wf: Workflow) -> None:
    """Raise NotExecutedError, naming the workflow or stage and the field, for the first setting
    of ``wf`` (or of its stages, tasks and multi-instance configs) that uses something the
    engine does not execute; values at their defaults are accepted."""
    where = f"workflow {wf.name!r}: "
    _check(wf, Slot(wf), where)
    _check_context(wf.context, WORKFLOW_CONTEXT, where)
    for stage in wf.stages:
        check_stage(stage)


def check_stage(stage: StageExecution) -> None:
    """``check_workflow`` for one stage, its tasks and its multi-instance config (for every path
    that stores a stage, such as adding one to a running workflow)."""
    at = f"stage {stage.ref_id!r}: "
    if (stage.mutex_key or stage.deferred_choice_group) and (
            stage.parent_stage_id is not None or stage.join_type is JoinType.MULTI_MERGE):
        name = "mutex_key" if stage.mutex_key else "deferred_choice_group"
        raise NotExecutedError(f"{at}{name}: {EXCLUSION_PLACES}")
    if stage.milestone_ref_id and stage.milestone_status and (
            stage.parent_stage_id is not None or stage.join_type is JoinType.MULTI_MERGE):
        raise NotExecutedError(f"{at}milestone_ref_id: {MILESTONE_PLACES}")
    if stage.mi_config is not None:
        _check(stage.mi_config, Slot(stage.mi_config, stage), at + "mi_config.")
    _check(stage, Slot(stage), at)
    _check_context(stage.context, STAGE_CONTEXT, at)
    for i, task in enumerate(stage.tasks):
        _check(task, Slot(task, stage, i), f"{at}tasks[{i}].")


_accepted_here: set[type[Message]] = set()


def accept_message_type(message_type: type[Message]) -> None:
    """Accept pushes of ``message_type`` in this process although no built-in handler executes
    it: ``QueueProcessor.register_handler`` calls this; call it yourself where the handler is
    registered in another process (the worker)."""
    _accepted_here.add(message_type)


def withdraw_message_type(message_type: type[Message] | None = None) -> None:
    """Undo ``accept_message_type`` for one type, or for every type (tests, a processor that
    unregisters its handler)."""
    if message_type is None:
        _accepted_here.clear()
    else:
        _accepted_here.discard(message_type)


def check_message(message: Message) -> None:
    """Raise NotExecutedError (a ValueError) for a message of a type no handler executes (unless
    accepted in this process) or with a field value the engine does not honour."""
    cls = type(message)
    name = cls.__name__
    entry = MESSAGE_TYPE_ENTRIES.get(name)
    if entry is not None and entry.refused and cls not in _accepted_here:
        assert entry.needs is not None
        raise NotExecutedError(
            f"{name}: {entry.needs.refusal}, and no handler for {name} is registered in this process "
            f"(QueueProcessor.register_handler; stabilize_redis.support.accept_message_type where the "
            f"handler runs in another process)")
    for field_name, refuse, feature in _MESSAGE_FIELD_CHECKS.get(cls, ()):
        if refuse(getattr(message, field_name), Slot(message)):
            raise NotExecutedError(f"{name}.{field_name}: {feature.refusal}")


def directive_of(result: TaskResult) -> str:
    """The DIRECTIVES key of a result: ``jump_to`` for a REDIRECT with a target, else its status."""
    if result.target_stage_ref_id is not None:
        return JUMP_TO
    return result.status.name


def result_refusal(result: TaskResult) -> str | None:
    """Why the engine cannot honour ``result`` (naming the directive), or None."""
    key = directive_of(result)
    entry = DIRECTIVES[key]
    if not entry.refused:
        return None
    assert entry.needs is not None
    if key == JUMP_TO:
        shown = f"TaskResult.jump_to({result.target_stage_ref_id!r})"
    elif result.status is WorkflowStatus.SUSPENDED:
        shown = "TaskResult.suspend()"
    elif result.status is WorkflowStatus.REDIRECT:
        shown = "TaskResult.redirect()"
    else:
        shown = f"status {result.status.name}"
    return f"{shown}: {entry.needs.refusal}; the task fails rather than leave its workflow waiting"


__all__ = [
    "DIRECTIVES", "FEATURES", "MESSAGE_FIELDS", "MESSAGE_TYPE_ENTRIES", "MODELS", "RESULT_FIELDS", "STAGE_CONTEXT",
    "WORKFLOW_CONTEXT", "Entry", "Feature", "NotExecutedError", "Slot", "accept_message_type", "check_message",
    "check_stage", "check_workflow", "directive_of", "result_refusal",
]
