"""One EngineSpec crosses every boundary whole: the Classifier, the server's batcher, Ray Data's ScoreOptions, Ray
Serve's ServeOptions, IngressSettings and TierSettings hold it (no copies of its fields), and plan as the offline
engine does from one BatchPolicy."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from padless.config import SERVING_STREAMS, EngineSpec, QueueConfig
from padless.engine import Classifier
from padless.planner import plan

# Ray Serve's own config models (imported here) still use pydantic's V1-style `Field(update_type=...)`: Ray's
# deprecation to fix, not padless's.
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on .Field. is deprecated"
                                        ":DeprecationWarning")
ENGINE_NAMES = set(EngineSpec.flat_names())


def _face_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_no_face_copies_an_engine_field() -> None:
    """Each face holds ``engine: EngineSpec`` and none of its fields, so a field added to ModelConfig or BatchConfig
    reaches every face with no change there."""
    from padless.ray.data import ScoreOptions
    from padless.ray.serve import IngressSettings, ServeOptions
    from padless.ray.serve_tier import TierSettings

    for face in (ScoreOptions, ServeOptions, IngressSettings, TierSettings):
        fields = {f.name: f for f in dataclasses.fields(face)}
        assert fields["engine"].type in ("EngineSpec", EngineSpec), face
        assert not (set(fields) - {"engine"}) & ENGINE_NAMES, face


def test_the_classifier_holds_its_spec_and_the_keyword_constructor_builds_the_same(tiny_model_dir: Path) -> None:
    spec = EngineSpec.of(model=str(tiny_model_dir), backend="dummy", max_length=64, threads=1, max_batch_tokens=640,
                         max_batch_size=9, width_multiple=8)
    clf = Classifier.from_spec(spec)
    assert clf.spec is spec and clf.model_config is spec.model and clf.batch_config is spec.batch
    same = Classifier(str(tiny_model_dir), backend="dummy", max_length=64, threads=1, max_batch_tokens=640,
                      max_batch_size=9, width_multiple=8)
    assert same.spec == spec and same.describe() == clf.describe()
    policy = clf.policy
    assert (policy.max_batch_tokens, policy.max_batch_size, policy.width_multiple, policy.max_width) == (640, 9, 8, 64)
    assert policy.batch_overhead_tokens == clf.runtime.batch_overhead_tokens
    lengths = [3, 64, 17, 40, 5, 5, 33]
    assert clf.plan(lengths) == plan(lengths, policy)
    wider = clf.with_options(max_batch_size=2)
    assert wider.spec.model is spec.model and wider.policy.max_batch_size == 2 and clf.policy.max_batch_size == 9
    from padless.errors import ConfigError

    with pytest.raises(ConfigError, match=r"max_length \(64\) is larger than max_batch_tokens \(32\)"):
        Classifier.from_spec(spec.replace(max_batch_tokens=32))


def test_the_servers_batcher_plans_with_the_classifiers_policy(tiny_model_dir: Path) -> None:
    import asyncio

    from padless.batcher import Batcher

    clf = Classifier.from_spec(EngineSpec.of(model=str(tiny_model_dir), backend="dummy", max_length=100,
                                             width_multiple=16))

    async def make() -> Batcher:
        return Batcher.for_engine(clf, queue=QueueConfig())

    batcher = asyncio.run(make())
    assert batcher.policy == clf.policy and batcher.max_length == clf.max_length == 100
    assert batcher.policy.width(99) == 100 and batcher.policy.width(17) == 32


def test_score_options_carry_the_spec_whole_and_resume_keys_are_unchanged() -> None:
    from padless.ray.data import ScoreOptions, options_dict

    spec = EngineSpec.of(model="/m", backend="onnx", max_length=64, truncate=False, max_chars=500, threads=2,
                         max_batch_tokens=1024, max_batch_size=8, width_multiple=4, streams=0,
                         pair_truncation="only_first")
    opts = ScoreOptions(engine=spec, column="t", pair_column="p", top_k=2, raw_scores=True, output_prefix="x_")
    assert opts.engine is spec and dataclasses.replace(opts).engine.flat() == spec.flat()
    # What guards --resume of a Ray job: exactly the keys and values it hashed before EngineSpec (a job written by an
    # earlier padless resumes as it did).
    assert options_dict(opts) == {"column": "t", "pair_column": "p", "backend": "onnx", "max_length": 64,
                                  "truncate": False, "max_chars": 500, "pair_truncation": "only_first", "top_k": 2,
                                  "raw_scores": True, "output_prefix": "x_"}


def test_serve_options_split_flat_keywords_into_the_engine() -> None:
    from padless.ray.serve import ENGINE_OPTIONS, ServeOptions

    opts = ServeOptions.of("m", backend="onnx", max_length=64, max_batch_tokens=1024, width_multiple=8, threads=2,
                           replicas=3, long_threshold=16, long_backend="torch")
    assert opts.engine == EngineSpec.of(model="m", backend="onnx", max_length=64, max_batch_tokens=1024,
                                        width_multiple=8, threads=2)
    assert (opts.replicas, opts.long_threshold, opts.long_backend) == (3, 16, "torch")
    assert set(ENGINE_OPTIONS) < ENGINE_NAMES
    with pytest.raises(TypeError):
        ServeOptions.of("m", top_k=2)


def _bound(app: Any) -> tuple[Any, ...]:
    return tuple(app._bound_deployment.init_args)


def test_serve_app_hands_each_tier_the_spec_whole(tiny_model_dir: Path) -> None:
    """The tiers' and the ingress's engines are the options' engine with only the model folder, task, backend,
    threads, token limit and serving streams resolved: every other field (present and future) crosses unchanged."""
    from padless.ray.serve import serve_app

    model = str(tiny_model_dir.resolve())
    app = serve_app(model, backend="dummy", max_length=64, max_chars=999, max_batch_tokens=1024, max_batch_size=9,
                    width_multiple=8, threads=1, pair_truncation="only_second", long_threshold=16, long_threads=2,
                    long_backend="dummy")
    ingress, short_app, long_app = _bound(app)
    (short,), (long,) = _bound(short_app), _bound(long_app)
    wanted = EngineSpec.of(model=model, task="classify", backend="dummy", max_length=64, max_chars=999,
                           max_batch_tokens=1024, max_batch_size=9, width_multiple=8, threads=1,
                           pair_truncation="only_second", streams=SERVING_STREAMS)
    assert short.engine == wanted and ingress.engine == wanted
    assert long.engine == wanted.replace(threads=2)
    assert (short.name, long.name) == ("short", "long") and short.queue is long.queue
