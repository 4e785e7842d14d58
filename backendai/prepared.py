"""Hot reads whose SQL is compiled once per process, not on every request.

Django compiles a queryset's SQL every time it runs it.  For the reads every API request makes
(the keypair of a signature with its user and policy, a session with what its answer shows) that
compilation, mostly the column lists of the joined tables, was the largest single cost of the
request: ~35 % of ``GET /session/<id>``'s Python (cProfile, docs/performance.md "API reads").
Django has no cache for compiled queries, and no maintained library adds one for model
querysets, hence this module.

``Prepared(name).fetch(queryset)`` returns what ``list(queryset)`` returns.  The first call for a
given *shape* compiles the whole statement as Django does and keeps the compiler; later calls of
the same shape compile only the WHERE clause (for its parameters, converted by the fields as
usual) and run the kept statement with them, rows turned into instances by Django's own
converters and related populators.  The shape is everything but the WHERE's values: the WHERE's
SQL text, the database alias, the joins, whether it is sliced, the ordering, ``select_related``, deferred
fields, annotations and grouping; a query whose statement has parameters outside its WHERE is never kept (it runs as
usual), nor one Django finds empty (``EmptyResultSet``), nor a ``select_for_update``.  A slice
``[a:b]`` is run as ``LIMIT %s OFFSET %s`` parameters, so every page of a list is one shape.  At
most ``MAX_SHAPES`` shapes per read.
"""
from __future__ import annotations

import copy
import logging
import threading

from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connections
from django.db.models import prefetch_related_objects
from django.db.models.query import ModelIterable, QuerySet, get_related_populators
from django.db.models.sql.constants import MULTI

log = logging.getLogger(__name__)

MAX_SHAPES = 32
_UNCACHEABLE = object()


class Prepared:
    """One hot read (a call site); see the module's docstring."""

    def __init__(self, name: str, max_shapes: int = MAX_SHAPES):
        self.name, self.max_shapes = name, max_shapes
        self._shapes: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def fetch(self, queryset) -> list:
        query = queryset.query
        if (query.combinator or query.values_select or query.extra or query.select_for_update
                or queryset._iterable_class is not ModelIterable):
            return list(queryset)
        using = queryset.db
        compiler = query.get_compiler(using=using)
        try:
            where_sql, where_params = compiler.compile(query.where)
        except (EmptyResultSet, FullResultSet):
            return list(queryset)
        deferred, defer = query.deferred_loading
        page = query.high_mark is not None  # LIMIT and OFFSET become parameters: one shape for every page
        key = (using, where_sql, page, None if page else query.low_mark, tuple(map(str, query.order_by)),
               query.default_ordering, repr(query.select_related), tuple(sorted(deferred)), defer,
               tuple(query.annotations), repr(query.group_by), query.distinct, tuple(query.distinct_fields),
               tuple((alias, getattr(join, "join_type", None)) for alias, join in query.alias_map.items()))
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._learn(key, query, compiler, where_params, using)
        if shape is _UNCACHEABLE:
            return list(queryset)
        template, sql = shape
        params = tuple(where_params)
        if page:
            params += (query.high_mark - query.low_mark, query.low_mark)
        objects = self._run(template, sql, params, using)
        if queryset._prefetch_related_lookups:
            prefetch_related_objects(objects, *queryset._prefetch_related_lookups)
        return objects

    def first(self, queryset):
        """``queryset.first()``, without the ordering by primary key ``first()`` adds to an unordered
        query (for a lookup of at most one row, as by primary key or a unique column)."""
        found = self.fetch(queryset[:1])
        return found[0] if found else None

    def _learn(self, key: tuple, query, compiler, where_params, using: str) -> object:
        page = query.high_mark is not None
        if page:  # compiled without its slice, which the statement takes as parameters
            query = query.clone()
            query.clear_limits()
            compiler = query.get_compiler(using=using)
        try:
            sql, params = compiler.as_sql()
        except (EmptyResultSet, FullResultSet):
            return _UNCACHEABLE
        if page:
            sql += " LIMIT %s OFFSET %s"
        shape = (compiler, sql) if tuple(params) == tuple(where_params) else _UNCACHEABLE
        with self._lock:
            if len(self._shapes) < self.max_shapes:
                self._shapes[key] = shape
            elif shape is not _UNCACHEABLE:
                log.debug("prepared read %s: more than %d shapes, %s runs uncached", self.name, self.max_shapes,
                          key[1])
        return shape

    def prefetch(self, instance, related_name: str, queryset) -> list:
        """``prefetch_related`` of one instance's reverse foreign key ``related_name`` with ``queryset`` (its rows
        filtered to the instance), through this read: ``instance.<related_name>.all()`` then
        answers from them, as after ``prefetch_related_objects``."""
        objects = self.fetch(queryset)
        attach([instance], related_name, objects)
        return objects

    @staticmethod
    def _run(template, sql: str, params: tuple, using: str) -> list:
        """What ``ModelIterable`` does, with the kept statement: the compiler is copied, because its
        database connection is the calling thread's."""
        compiler = copy.copy(template)
        compiler.connection = connections[using]
        compiler.as_sql = lambda *args, **kwargs: (sql, params)
        results = compiler.execute_sql(MULTI)
        select, klass_info, annotation_col_map = compiler.select, compiler.klass_info, compiler.annotation_col_map
        model_cls = klass_info["model"]
        select_fields = klass_info["select_fields"]
        start, end = select_fields[0], select_fields[-1] + 1
        init_list = [f[0].target.attname for f in select[start:end]]
        related_populators = get_related_populators(klass_info, select, using)
        objects = []
        for row in compiler.results_iter(results):
            obj = model_cls.from_db(using, init_list, row[start:end])
            for populator in related_populators:
                populator.populate(row, obj)
            for attr_name, col_pos in (annotation_col_map or {}).items():
                setattr(obj, attr_name, row[col_pos])
            objects.append(obj)
        return objects


def attach(instances: list, related_name: str, objects: list) -> None:
    """What ``prefetch_related(related_name)`` leaves on ``instances`` (a reverse foreign key), from
    ``objects`` read by the caller in one query: each instance's ``<related_name>.all()`` answers its
    own objects without a query, and each object's foreign key answers its instance.  Django's
    prefetch builds a filtered queryset per instance to hold them (a clone of the query each: ~0.15
    ms per instance here, 3 ms of a page of 20 sessions with two relations); an empty one is enough."""
    if not instances:
        return
    descriptor = getattr(type(instances[0]), related_name)
    field, cache_name = descriptor.field, descriptor.rel.cache_name
    owned: dict = {}
    for obj in objects:
        owned.setdefault(getattr(obj, field.attname), []).append(obj)
    for instance in instances:
        mine = owned.get(instance.pk, [])
        for obj in mine:
            field.set_cached_value(obj, instance)
        cached = QuerySet(model=field.model)
        cached._result_cache, cached._prefetch_done = mine, True
        if not hasattr(instance, "_prefetched_objects_cache"):
            instance._prefetched_objects_cache = {}
        instance._prefetched_objects_cache[cache_name] = cached
