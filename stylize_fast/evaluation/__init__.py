"""Evaluation of stylised outputs: the flicker (warping error) of stylised videos."""

from .flicker import (
    FLOW_METHODS,
    PairMotion,
    WarpingReport,
    estimate_flow,
    evaluate_video,
    occlusion_mask,
    pair_error,
    pair_motion,
    warp,
    warping_errors,
    warping_report,
)

__all__ = ["FLOW_METHODS", "PairMotion", "WarpingReport", "estimate_flow", "evaluate_video",
           "occlusion_mask", "pair_error", "pair_motion", "warp", "warping_errors",
           "warping_report"]
