"""Where rows and inputs live besides one result file: `shards` (shard directories: the plan,
names, manifest, resume), `stores` (a directory or object-store prefix, files published whole)
and `uri_inputs` (inputs on object stores: listing and fetching)."""
