"""The build pipeline: steps that pull, build, assemble and write an image, and their runner."""

from hatch_jib.pipeline.runner import BuildPlan, BuildResult, LayerReport, run_build

__all__ = ["BuildPlan", "BuildResult", "LayerReport", "run_build"]
