"""Option declarations that several ``padless`` commands share, so that every command spells a flag, its
``PADLESS_*`` environment variable and its help the same way. Imports nothing of padless."""

from __future__ import annotations

from typing import Annotated

import typer

ModelOpt = Annotated[str, typer.Option("--model", "-m", envvar="PADLESS_MODEL",
                                       help="'default', a local Hugging Face folder, or a Hub id.")]
BackendOpt = Annotated[str, typer.Option(envvar="PADLESS_BACKEND", help="auto (an optimize folder's selected variant, else torch), torch, torch-bf16, torch-fp16, torch-int8, onnx, onnx-int8, openvino, openvino-bf16, openvino-int8, openvino-int8-bf16, dummy.")]
ServeBackendOpt = Annotated[str, typer.Option(envvar="PADLESS_BACKEND", help="auto (an optimize folder's selected variant, else ONNX Runtime fp32 exported from the model and checked against PyTorch within 1e-4, else torch), torch, torch-bf16, torch-fp16, torch-int8, onnx, onnx-int8, openvino, openvino-bf16, openvino-int8, openvino-int8-bf16, dummy.")]
MaxLenOpt = Annotated[int | None, typer.Option(envvar="PADLESS_MAX_LENGTH",
                                                  help="Token limit per input [default: the model's limit].")]
MaxCharsOpt = Annotated[int, typer.Option(envvar="PADLESS_MAX_CHARS", help="Character cap applied before tokenizing.")]
TokensOpt = Annotated[int, typer.Option(envvar="PADLESS_MAX_BATCH_TOKENS", help="Padded tokens (rows × longest) per batch.")]
RowsOpt = Annotated[int, typer.Option(envvar="PADLESS_MAX_BATCH_SIZE", help="Rows per batch.")]
WidthOpt = Annotated[int, typer.Option(envvar="PADLESS_WIDTH_MULTIPLE", help="Round each batch's width up to a multiple of this; 0 = the backend's choice (16 for OpenVINO bf16 and int8 on a CPU with AMX, where aligned widths run faster; 1, exact widths, elsewhere).")]
ThreadsOpt = Annotated[int, typer.Option(envvar="PADLESS_THREADS", help="CPU threads; 0 = every usable core.")]
StreamsOpt = Annotated[int, typer.Option(envvar="PADLESS_STREAMS", help="Batches computed at once, the threads split between them (OpenVINO backends; others run 1); 0 = the backend's choice: OpenVINO's throughput setting, 2 on 2 cores. padless serve runs 1: its batcher hands over one batch at a time.")]
PairTruncOpt = Annotated[str, typer.Option(envvar="PADLESS_PAIR_TRUNCATION", help="How an over-long text pair is cut: longest_first (transformers' default), only_first, only_second.")]
RayDataOpt = Annotated[bool, typer.Option("--ray", envvar="PADLESS_RAY", help="Run on Ray Data: INPUT may be a file, a folder or a glob (any filesystem Ray reads); -o is a Parquet dataset folder.")]
RayAddressOpt = Annotated[str | None, typer.Option(envvar="PADLESS_RAY_ADDRESS", help="Ray cluster to join ('auto' = the running one) [default: start a local cluster].", show_default=False)]
WorkersOpt = Annotated[int, typer.Option(envvar="PADLESS_WORKERS", help="--ray: worker actors; 0 = one per CPU of the cluster (--threads then defaults to CPUs / workers).")]
TunedOpt = Annotated[str | None, typer.Option("--tuned", envvar="PADLESS_TUNED", help="Settings file written by `padless tune` [default: padless-tuned.json in the model's folder, when there].", show_default=False)]
