"""webtext.train: the GPT-2 model, shard loader, training loop, checkpoints, sampling and HF conversion.
Importing it is cheap; `webtext.train.shard_format` needs only numpy and pyarrow (no torch)."""
