"""The batch engines (`digitkit.infer.spec.BatchEngine`), one module each, imported only when
a run asks for one (`digitkit.infer.spec.get_engine`): `local` (worker processes on this
machine) and `ray` (a Ray Data actor pool; its shard-directory writer `ray_shards`, and what
both share, `ray_actors`, which imports neither back)."""
