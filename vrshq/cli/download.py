"""``vrshq download``: fetch the official weights on a machine with network."""

from __future__ import annotations

import argparse

from vrshq.cli.progress import add_progress_option, wants_bars
from vrshq.errors import VrshqError
from vrshq.model.download import MODELS, PARTS, DownloadSources, download


def register(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand."""
    d = DownloadSources()
    p = sub.add_parser("download", help="download the official weights",
                       description="Download VRS-HQ (Hugging Face), SAM-2 hiera-L 2.0 and CLIP "
                       "ViT-L-14-336 (open_clip) into DIR/vrshq, DIR/sam2 and DIR/clip; with "
                       "--model sam3, SAM 3 (gated: accept its licence on the model page first) "
                       "into DIR/sam3.")
    p.add_argument("dir", help="target folder")
    p.add_argument("--model", choices=tuple(MODELS), default="vrshq",
                   help="which model's weights: vrshq (VRS-HQ, SAM-2, CLIP; the default) or sam3 "
                   "(the gated facebook/sam3 into DIR/sam3, with your Hugging Face token)")
    p.add_argument("--hf-token", help="Hugging Face token for sam3 (default $HF_TOKEN, else the "
                   "token `hf auth login` saved); sent to the Hub's host only")
    p.add_argument("--sam3-repo", default=d.sam3_repo, help="Hugging Face repo id of SAM 3")
    p.add_argument("--only", action="append", choices=PARTS,
                   help="download only this part of --model vrshq (repeatable; default: all)")
    p.add_argument("--vrshq-repo", default=d.vrshq_repo, help="Hugging Face repo id of VRS-HQ")
    p.add_argument("--hf-endpoint", help="Hugging Face endpoint (a mirror)")
    p.add_argument("--sam2-url", default=d.sam2_url, help="URL of sam2_hiera_large.pt")
    p.add_argument("--clip-model", default=d.clip_model, help="open_clip model name")
    p.add_argument("--clip-pretrained", default=d.clip_pretrained, help="open_clip pretrained tag")
    add_progress_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    if args.only and args.model != "vrshq":
        raise VrshqError(f"--only picks parts of --model vrshq; --model {args.model} is one folder")
    sources = DownloadSources(vrshq_repo=args.vrshq_repo, hf_endpoint=args.hf_endpoint,
                              sam2_url=args.sam2_url, clip_model=args.clip_model,
                              clip_pretrained=args.clip_pretrained, sam3_repo=args.sam3_repo,
                              hf_token=args.hf_token)
    parts = tuple(dict.fromkeys(args.only)) if args.only else MODELS[args.model]
    download(args.dir, parts, sources, progress=wants_bars(args))
    return 0
