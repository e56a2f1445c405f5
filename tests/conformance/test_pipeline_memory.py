"""The reference's ``KFPCDControllerRefPipeline`` run whole (PIPELINE.md), reproduced through the
public ``generate_video`` with pre-rendered inputs."""

from tests.conformance.helpers import assert_case_passes


def test_pipeline_memory(conformance_dir):
    assert_case_passes(conformance_dir, "pipeline_memory", required=REQUIRED)


#: quantities the checker must have compared (a checker that skipped one would otherwise pass)
REQUIRED = {"prompt_embeds", "probe_prompt_embeds", "image_embeds", "condition", "render_latent", "render_mask",
            "camera_embedding", "timesteps", "latents_step_1", "latents_final", "decoded_video", "output_video",
            "transformer_calls",
            "negative_prompt_embeds", "velocity_cond_1", "velocity_uncond_1", "reference_latent", "camera_qt",
            "camera_qt_ref", "ref_index"}
