"""Internals of the condition-expression evaluator; the public interface is
:mod:`stabilize_redis.expressions` (import from there).

Modules, each depending only on those before it:

* :mod:`.limits` -- :class:`~.limits.ExpressionError`, the size caps and the work budget;
* :mod:`.cost` -- measuring values and charging work to a :class:`~.limits.WorkMeter`;
* :mod:`.functions` -- the callable built-ins (``len``, ``str``, ``min`` ...);
* :mod:`.interpreter` -- parsing and node-by-node evaluation.
"""
