"""The README's support matrix, checked: every cell names the tests that prove it on that version's tiny variant,
those tests exist, and the README shows exactly the table rendered here. A cell without a test is shown as
untested (``—``), never as supported. ``python tests/unit/test_support_matrix.py`` prints the table.
A test is named by its module's basename, which is unique across tests/'s folders (tests/conftest.py puts them all
on ``sys.path``)."""

import importlib
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
VERSIONS = ("LTX-2 (`ltx2-19b`)", "LTX-2.3 (`ltx2.3-22b`)", "LTX-2.5 (`ltx2.5`)")

_MODES = "test_strategies::test_every_strategy_trains_on_every_version"
_MODES_20 = "test_strategies::test_every_strategy_trains_and_its_checkpoint_reloads"
_BACKENDS_20 = "test_backends::test_each_backend_trains_what_ddp_trains"
_BACKENDS = "test_versions::test_each_backend_on_two_processes"
_CONSUMERS = (
    "test_lora_consumers::test_diffusers_load_lora_weights_gives_our_outputs",
    "test_lora_consumers::test_ltx_core_fuses_our_default_file_at_alpha_over_rank",
    "test_lora_consumers::test_diffsynth_loader_gives_our_outputs_with_and_without_alpha",
    "test_lora_consumers::test_comfyui_rule_gives_our_outputs_with_and_without_alpha",
)


def _same(*tests):
    """One cell for 2.3 and 2.5 (tests parametrized over both)."""
    return tests, tests


# row -> (2.0 tests, 2.3 tests, 2.5 tests); () = untested, None = not applicable to that version
ROWS = {
    "prepare: video + audio latents, text features": (
        ("test_prepare::test_cache_holds_normalised_latents_in_the_pipeline_geometry",),
        *_same("test_versions::test_prepare_caches_both_text_projections"),
    ),
    "t2av, t2v, i2av, ic_lora, a2v, v2a: LoRA and full fine-tuning": ((_MODES_20,), *_same(_MODES)),
    "ddp, 2 processes: LoRA / full": ((_BACKENDS_20,), *_same(_BACKENDS)),
    "fsdp2, 2 processes: LoRA / full": (
        (_BACKENDS_20,),
        *_same(_BACKENDS, "test_versions::test_full_fine_tuning_under_fsdp2_on_two_processes"),
    ),
    "DeepSpeed ZeRO-2, 2 processes: LoRA": ((_BACKENDS_20,), *_same(_BACKENDS)),
    "DeepSpeed ZeRO-2, 2 processes: full": ((_BACKENDS_20,), *_same(_BACKENDS)),
    "DeepSpeed ZeRO-3 + optimizer offload, 2 processes: LoRA": ((_BACKENDS_20,), *_same(_BACKENDS)),
    "FP8 frozen base + block swap: LoRA": (
        (
            "test_memory_fp8::test_a_lora_trains_over_an_fp8_base_that_never_changes",
            "test_memory_offload::test_training_with_block_swap_and_activation_offload_matches_training_without",
        ),
        *_same("test_versions::test_a_lora_over_an_fp8_base_with_block_swap_trains"),
    ),
    "checkpoint -> resume, bit for bit": (
        ("test_train_e2e::test_resume_continues_exactly_where_an_interrupted_run_stopped",),
        *_same("test_versions::test_resume_continues_exactly"),
    ),
    "validation clip = `sample` from the checkpoint": (
        ("test_train_e2e::test_exported_lora_reloaded_by_sample_reproduces_validation_exactly",),
        *_same("test_versions::test_lora_trains_checkpoints_and_sample_reproduces_validation"),
    ),
    "text connectors trained beside the DiT (`train.trainable`): LoRA / full, validation = `sample`": (
        (
            "test_methods::test_a_lora_on_the_connectors_trains_them_and_samples_like_validation",
            "test_methods::test_full_fine_tuning_of_the_connectors_exports_them_beside_the_transformer",
        ),
        *_same("test_versions::test_trained_connectors_reload_into_sample_like_validation"),
    ),
    "`sample --two-stage` (x2 upscaler + stage-2 LoRA), `--distilled-pipeline`": (
        (
            "test_inference_pipeline::test_sample_command_runs_the_diffsynth_pipeline_two_stage",
            "test_inference_pipeline::test_distilled_pipeline_uses_fixed_schedule_without_cfg",
        ),
        *_same("test_versions::test_two_stage_and_distilled_sampling"),
    ),
    "LoRA in diffusers, ltx-core, DiffSynth, ComfyUI (same effect)": (_CONSUMERS, _CONSUMERS, _CONSUMERS),
    "`export` formats official / official-alpha / diffusers": (
        ("test_lora_files::test_every_format_round_trips_to_the_same_effective_weights",),
        *_same("test_lora_consumers::test_23_and_25_loras_round_trip_in_every_format_to_the_same_effective_weights"),
    ),
    "`export --merge` into the base (its own layout)": (
        ("test_lora_files::test_merged_weights_reproduce_base_plus_lora_in_both_layouts",),
        *_same("test_versions::test_a_lora_merges_into_the_versions_layout"),
    ),
    "another version's checkpoint or cache refused": (
        *(
            (
                "test_versions::test_a_checkpoint_of_another_version_is_refused_naming_both",
                "test_versions::test_a_cache_of_another_version_is_refused_with_how_to_prepare",
            ),
        )
        * 3,
    ),
    "key maps both ways against the published layout": (
        *(("test_keys::test_specs_match_reference_layout", "test_keys::test_round_trip_names_and_shapes_on_meta"),) * 3,
    ),
    "loading the release's one-file-per-part layout": (
        None,
        None,
        (
            "test_versions::test_a_25_release_directory_loads_prepares_and_trains",
            "test_versions::test_the_25_release_files_hold_the_published_keys",
        ),
    ),
    "diffusion video decoder: validation = `sample`, DiffSynth's pipeline": (
        None,
        None,
        (
            "test_diffusion_decoder::test_validation_and_sample_decode_with_the_diffusion_decoder",
            "test_diffusion_decoder::test_the_diffsynth_pipeline_decodes_with_the_diffusion_decoder",
            "test_diffusion_decoder::test_the_decoder_loads_from_each_layout_and_decodes_the_same",
        ),
    ),
    "duration head: `sample --num-frames auto`": (
        None,
        None,
        ("test_diffusion_decoder::test_sample_num_frames_auto_takes_each_prompts_length_from_the_duration_head",),
    ),
}


def render() -> str:
    lines = ["| | " + " | ".join(VERSIONS) + " |", "|---" * (len(VERSIONS) + 1) + "|"]
    for row, cells in ROWS.items():
        lines.append(
            f"| {row} | " + " | ".join("n/a" if tests is None else "✓" if tests else "—" for tests in cells) + " |"
        )
    return "\n".join(lines)


def test_every_cell_names_tests_that_exist():
    assert all(len(cells) == len(VERSIONS) for cells in ROWS.values())
    for row, cells in ROWS.items():
        for tests in cells:
            for ref in tests or ():
                module, function = ref.split("::")
                assert callable(getattr(importlib.import_module(module), function, None)), f"{row}: {ref}"


def test_the_readme_shows_this_matrix():
    text = README.read_text()
    found = re.search(r"<!-- support-matrix -->\n(.*?)\n<!-- /support-matrix -->", text, re.S)
    assert found, "README.md has no <!-- support-matrix --> block"
    assert found.group(1).strip() == render(), (
        "README's support matrix is stale: python tests/unit/test_support_matrix.py"
    )


if __name__ == "__main__":
    print(render())
