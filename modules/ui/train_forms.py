"""The Train tab's forms: each returns {"inputs": {request field: component}, "button": ..., ...}, with A1111's
labels, defaults and elem_ids where A1111 has the control."""
from __future__ import annotations

import gradio as gr



def embedding_names(services) -> list[str]:
    database = services.networks.embeddings
    database.refresh()
    return sorted(database.all)


def template_names(services) -> list[str]:
    folder = services.paths.training_templates
    return sorted(path.name for path in folder.glob("*.txt")) if folder.is_dir() else []


def refresh_button(elem_id: str) -> gr.Button:
    return gr.Button("\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}", scale=0, min_width=40,
                     elem_id=elem_id)


def prepare_form() -> dict:
    """Dataset preparation (A1111's preprocess / Extras training helpers)."""
    inputs = {
        "source_folder": gr.Textbox(label="Source directory", elem_id="train_process_src"),
        "destination_folder": gr.Textbox(label="Destination directory", elem_id="train_process_dst"),
    }
    with gr.Row():
        inputs["width"] = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id="train_process_width")
        inputs["height"] = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id="train_process_height")
    with gr.Row():
        inputs["existing_caption"] = gr.Dropdown(["ignore", "copy", "prepend", "append"], value="ignore",
                                                 label="Existing caption txt action",
                                                 elem_id="train_preprocess_txt_action")
        inputs["captioners"] = gr.CheckboxGroup(["Deepbooru", "BLIP"], value=[], label="Caption",
                                                elem_id="train_process_caption")
    inputs["keep_original_size"] = gr.Checkbox(False, label="Keep original size",
                                               elem_id="train_process_keep_original_size")
    with gr.Row():
        inputs["flip"] = gr.Checkbox(False, label="Create flipped copies", elem_id="train_process_flip")
        inputs["split"] = gr.Checkbox(False, label="Split oversized images", elem_id="train_process_split")
        inputs["focal_crop"] = gr.Checkbox(False, label="Auto focal point crop", elem_id="train_process_focal_crop")
        inputs["autosized_crop"] = gr.Checkbox(False, label="Auto-sized crop", elem_id="train_process_multicrop")
    with gr.Accordion("Split oversized images", open=False):
        inputs["split_threshold"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Split image threshold",
                                              elem_id="train_process_split_threshold")
        inputs["overlap_ratio"] = gr.Slider(0, 0.9, value=0.2, step=0.05, label="Split image overlap ratio",
                                            elem_id="train_process_overlap_ratio")
    with gr.Accordion("Auto focal point crop", open=False):
        inputs["focal_face_weight"] = gr.Slider(0, 1, value=0.9, step=0.05, label="Focal point face weight",
                                                elem_id="train_process_focal_crop_face_weight")
        inputs["focal_entropy_weight"] = gr.Slider(0, 1, value=0.15, step=0.05, label="Focal point entropy weight",
                                                   elem_id="train_process_focal_crop_entropy_weight")
        inputs["focal_edges_weight"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Focal point edges weight",
                                                 elem_id="train_process_focal_crop_edges_weight")
    with gr.Accordion("Auto-sized crop", open=False):
        inputs["min_dimension"] = gr.Slider(64, 2048, value=384, step=64, label="Dimension lower bound",
                                            elem_id="train_process_multicrop_mindim")
        inputs["max_dimension"] = gr.Slider(64, 2048, value=768, step=64, label="Dimension upper bound",
                                            elem_id="train_process_multicrop_maxdim")
        inputs["min_area"] = gr.Slider(64 * 64, 2048 * 2048, value=64 * 64, step=1, label="Area lower bound",
                                       elem_id="train_process_multicrop_minarea")
        inputs["max_area"] = gr.Slider(64 * 64, 2048 * 2048, value=640 * 640, step=1, label="Area upper bound",
                                       elem_id="train_process_multicrop_maxarea")
        inputs["objective"] = gr.Radio(["Maximize area", "Minimize error"], value="Maximize area",
                                       label="Resizing objective", elem_id="train_process_multicrop_objective")
        inputs["error_threshold"] = gr.Slider(0, 1, value=0.1, step=0.01, label="Error threshold",
                                              elem_id="train_process_multicrop_threshold")
    button = gr.Button("Preprocess", variant="primary", elem_id="train_preprocess")
    return {"inputs": inputs, "button": button}


def create_embedding_form() -> dict:
    inputs = {
        "name": gr.Textbox(label="Name", elem_id="train_new_embedding_name"),
        "init_text": gr.Textbox(label="Initialization text", value="*", elem_id="train_initialization_text"),
        "num_vectors_per_token": gr.Slider(label="Number of vectors per token", minimum=1, maximum=75, step=1,
                                           value=1, elem_id="train_nvpt"),
        "overwrite_old": gr.Checkbox(False, label="Overwrite Old Embedding", elem_id="train_overwrite_old_embedding"),
    }
    button = gr.Button("Create embedding", variant="primary", elem_id="train_create_embedding")
    return {"inputs": inputs, "button": button}


def create_hypernetwork_form() -> dict:
    from modules.training.hypernetwork_files import WEIGHT_INITIALIZATIONS, offered_activations

    inputs = {
        "name": gr.Textbox(label="Name", elem_id="train_new_hypernetwork_name"),
        "enable_sizes": gr.CheckboxGroup(["768", "1024", "320", "640", "1280"], value=["768", "320", "640", "1280"],
                                         label="Modules", elem_id="train_new_hypernetwork_sizes"),
        "layer_structure": gr.Textbox("1, 2, 1", label="Enter hypernetwork layer structure",
                                      placeholder="1st and last digit must be 1. ex:'1, 2, 1'",
                                      elem_id="train_new_hypernetwork_layer_structure"),
        "activation_func": gr.Dropdown(offered_activations(), value="linear",
                                       label="Select activation function of hypernetwork. Recommended : Swish / "
                                             "Linear(none)", elem_id="train_new_hypernetwork_activation_func"),
        "weight_init": gr.Dropdown(list(WEIGHT_INITIALIZATIONS), value="Normal",
                                   label="Select Layer weights initialization. Recommended: Kaiming for relu-like, "
                                         "Xavier for sigmoid-like, Normal otherwise",
                                   elem_id="train_new_hypernetwork_initialization_option"),
        "add_layer_norm": gr.Checkbox(False, label="Add layer normalization",
                                      elem_id="train_new_hypernetwork_add_layer_norm"),
        "use_dropout": gr.Checkbox(False, label="Use dropout", elem_id="train_new_hypernetwork_use_dropout"),
        "dropout_structure": gr.Textbox("0, 0, 0", label="Enter hypernetwork Dropout structure (or empty). "
                                        "Recommended : 0~0.35 incrementing sequence: 0, 0.05, 0.15"),
        "overwrite_old": gr.Checkbox(False, label="Overwrite Old Hypernetwork",
                                     elem_id="train_overwrite_old_hypernetwork"),
    }
    button = gr.Button("Create hypernetwork", variant="primary", elem_id="train_create_hypernetwork")
    return {"inputs": inputs, "button": button}


def hypernetwork_names(services) -> list[str]:
    return [info.name for info in services.networks.hypernetworks.refresh()]


def train_form(services) -> dict:
    """A1111's Train sub-tab: one form for both kinds, each with its own name, learning rate and button.
    Returns {"embedding": form, "hypernetwork": form, "interrupt", "refresh_embedding", "refresh_hypernetwork",
    "refresh_template", "embedding_name", "hypernetwork_name", "template_filename"}."""
    with gr.Row():
        embedding = gr.Dropdown(embedding_names(services), label="Embedding", elem_id="train_embedding")
        refresh_embedding = refresh_button("train_embedding_refresh")
    with gr.Row():
        hypernetwork = gr.Dropdown(hypernetwork_names(services), label="Hypernetwork", elem_id="train_hypernetwork")
        refresh_hypernetwork = refresh_button("train_hypernetwork_refresh")
    with gr.Row():
        embedding_rate = gr.Textbox("0.005", label="Embedding Learning rate", elem_id="train_embedding_learn_rate")
        hypernetwork_rate = gr.Textbox("0.00001", label="Hypernetwork Learning rate",
                                       elem_id="train_hypernetwork_learn_rate")
    shared = {}
    with gr.Row():
        shared["clip_grad_mode"] = gr.Dropdown(["disabled", "value", "norm"], value="disabled",
                                               label="Gradient Clipping")
        shared["clip_grad_value"] = gr.Textbox("0.1", label="Gradient clip value")
    with gr.Row():
        shared["batch_size"] = gr.Number(1, label="Batch size", precision=0, elem_id="train_batch_size")
        shared["gradient_step"] = gr.Number(1, label="Gradient accumulation steps", precision=0,
                                            elem_id="train_gradient_step")
    shared["data_root"] = gr.Textbox(label="Dataset directory", placeholder="Path to directory with input images",
                                     elem_id="train_dataset_directory")
    shared["log_directory"] = gr.Textbox("textual_inversion", label="Log directory",
                                         elem_id="train_log_directory")
    templates = template_names(services)
    with gr.Row():
        shared["template_filename"] = gr.Dropdown(templates, label="Prompt template", elem_id="train_template_file",
                                                  value="style_filewords.txt" if "style_filewords.txt" in templates
                                                  else (templates[0] if templates else None))
        refresh_template = refresh_button("refrsh_train_template_file")   # A1111's elem_id, spelt as A1111 does
    shared["training_width"] = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id="train_training_width")
    shared["training_height"] = gr.Slider(64, 2048, value=512, step=8, label="Height",
                                          elem_id="train_training_height")
    shared["varsize"] = gr.Checkbox(False, label="Do not resize images", elem_id="train_varsize")
    shared["steps"] = gr.Number(100000, label="Max steps", precision=0, elem_id="train_steps")
    with gr.Row():
        shared["create_image_every"] = gr.Number(
            500, label="Save an image to log directory every N steps, 0 to disable", precision=0,
            elem_id="train_create_image_every")
        save_every = gr.Number(500, label="Save a copy of embedding to log directory every N steps, 0 to disable",
                               precision=0, elem_id="train_save_embedding_every")
    shared["use_weight"] = gr.Checkbox(False, label="Use PNG alpha channel as loss weight", elem_id="use_weight")
    save_with_embedding = gr.Checkbox(True, label="Save images with embedding in PNG chunks",
                                      elem_id="train_save_image_with_stored_embedding")
    shared["preview_from_txt2img"] = gr.Checkbox(
        False, label="Read parameters (prompt, etc...) from txt2img tab when making previews",
        elem_id="train_preview_from_txt2img")
    shared["shuffle_tags"] = gr.Checkbox(False, label="Shuffle tags by ',' when creating prompts.",
                                         elem_id="train_shuffle_tags")
    shared["tag_drop_out"] = gr.Slider(0, 1, value=0, step=0.1, label="Drop out tags when creating prompts.",
                                       elem_id="train_tag_drop_out")
    shared["latent_sampling_method"] = gr.Radio(["once", "deterministic", "random"], value="once",
                                                label="Choose latent sampling method",
                                                elem_id="train_latent_sampling_method")
    with gr.Row():
        interrupt = gr.Button("Interrupt", elem_id="train_interrupt_training")
        train_hypernetwork = gr.Button("Train Hypernetwork", variant="primary", elem_id="train_train_hypernetwork")
        train_embedding = gr.Button("Train Embedding", variant="primary", elem_id="train_train_embedding")
    return {
        "embedding": {"inputs": {"embedding_name": embedding, "learn_rate": embedding_rate,
                                 "save_embedding_every": save_every,
                                 "save_image_with_stored_embedding": save_with_embedding, **shared},
                      "button": train_embedding},
        "hypernetwork": {"inputs": {"hypernetwork_name": hypernetwork, "learn_rate": hypernetwork_rate,
                                    "save_hypernetwork_every": save_every, **shared}, "button": train_hypernetwork},
        "interrupt": interrupt, "refresh_embedding": refresh_embedding, "refresh_hypernetwork": refresh_hypernetwork,
        "refresh_template": refresh_template, "embedding_name": embedding, "hypernetwork_name": hypernetwork,
        "template_filename": shared["template_filename"],
    }


def preview_fields(prefix: str, default_prompt: str) -> dict:
    """A row with the LoRA / ControlNet trainings' preview_every and preview_prompt fields."""
    with gr.Row():
        return {"preview_every": gr.Number(0, label="Preview image every N steps, 0 to disable", precision=0,
                                           elem_id=f"{prefix}_preview_every"),
                "preview_prompt": gr.Textbox(label=f"Preview prompt (empty: {default_prompt})",
                                             elem_id=f"{prefix}_preview_prompt")}


def train_lora_form() -> dict:
    """LoRA and DreamBooth-LoRA (not in A1111; the fields of training/lora_requests.py)."""
    from modules.training.lora_requests import LR_SCHEDULERS, MAX_CLASS_IMAGES, MAX_RANK

    inputs = {"name": gr.Textbox(label="Name (the file in models/Lora)", elem_id="train_lora_name"),
              "data_root": gr.Textbox(label="Dataset directory", elem_id="train_lora_dataset_directory")}
    with gr.Row():
        inputs["instance_prompt"] = gr.Textbox(label="Instance prompt (before each caption)",
                                               elem_id="train_lora_instance_prompt")
        inputs["use_captions"] = gr.Checkbox(True, label="Use captions (.txt beside each image, else its name)",
                                             elem_id="train_lora_use_captions")
    with gr.Accordion("DreamBooth: prior preservation", open=False):
        inputs["class_data_root"] = gr.Textbox(label="Class images directory", elem_id="train_lora_class_dir")
        inputs["class_prompt"] = gr.Textbox(label="Class prompt", elem_id="train_lora_class_prompt")
        inputs["prior_loss_weight"] = gr.Slider(0, 2, value=1, step=0.05, label="Prior loss weight",
                                                elem_id="train_lora_prior_loss_weight")
        inputs["num_class_images"] = gr.Number(
            0, label="Number of class images (0: use the folder as it is; fewer there are generated from the class "
                     "prompt first)", precision=0, minimum=0, maximum=MAX_CLASS_IMAGES,
            elem_id="train_lora_num_class_images")
    with gr.Row():
        inputs["rank"] = gr.Slider(1, MAX_RANK, value=16, step=1, label="Rank (network dim)", elem_id="train_lora_rank")
        inputs["alpha"] = gr.Number(0, label="Alpha (0: the rank)", minimum=0, elem_id="train_lora_alpha")
    with gr.Row():
        inputs["target"] = gr.Radio(["attention", "all_linear"], value="attention", label="UNet layers",
                                    elem_id="train_lora_target")
        inputs["train_text_encoder"] = gr.Checkbox(False, label="Train the text encoder(s)",
                                                   elem_id="train_lora_text_encoder")
    with gr.Row():
        inputs["unet_lr"] = gr.Number(1e-4, label="UNet learning rate", elem_id="train_lora_unet_lr")
        inputs["text_encoder_lr"] = gr.Number(5e-5, label="Text encoder learning rate",
                                              elem_id="train_lora_text_encoder_lr")
        inputs["optimizer"] = gr.Dropdown(["AdamW", "AdamW8bit"], value="AdamW", label="Optimizer",
                                          elem_id="train_lora_optimizer")
    with gr.Row():
        inputs["lr_scheduler"] = gr.Dropdown(list(LR_SCHEDULERS), value="constant", label="Learning rate schedule",
                                             elem_id="train_lora_lr_scheduler")
        inputs["lr_warmup_steps"] = gr.Number(0, label="Warm-up steps", precision=0, elem_id="train_lora_warmup")
    with gr.Row():
        inputs["steps"] = gr.Number(1000, label="Steps", precision=0, elem_id="train_lora_steps")
        inputs["batch_size"] = gr.Number(1, label="Batch size", precision=0, elem_id="train_lora_batch_size")
        inputs["gradient_accumulation"] = gr.Number(1, label="Gradient accumulation steps", precision=0,
                                                    elem_id="train_lora_gradient_accumulation")
    with gr.Row():
        inputs["resolution"] = gr.Slider(64, 2048, value=512, step=8, label="Resolution",
                                         elem_id="train_lora_resolution")
        inputs["bucketing"] = gr.Checkbox(False, label="Aspect-ratio buckets (mixed sizes)",
                                          elem_id="train_lora_bucketing")
    with gr.Row():
        inputs["caption_dropout"] = gr.Slider(0, 1, value=0, step=0.05, label="Caption dropout",
                                              elem_id="train_lora_caption_dropout")
        inputs["min_snr_gamma"] = gr.Number(0, label="Min-SNR gamma (0: off; 5 is usual)",
                                            elem_id="train_lora_min_snr_gamma")
        inputs["noise_offset"] = gr.Number(0, label="Noise offset", elem_id="train_lora_noise_offset")
    with gr.Row():
        inputs["save_every"] = gr.Number(0, label="Save a copy every N steps, 0 to disable", precision=0,
                                         elem_id="train_lora_save_every")
        inputs["seed"] = gr.Number(-1, label="Seed (-1: random)", precision=0, elem_id="train_lora_seed")
    inputs.update(preview_fields("train_lora", "the first image's training prompt"))
    with gr.Row():
        inputs["mixed_precision"] = gr.Dropdown(["no", "fp16", "bf16"], value="no",
                                                label="Mixed precision (fast on a GPU)",
                                                elem_id="train_lora_mixed_precision")
        inputs["gradient_checkpointing"] = gr.Checkbox(False, label="Gradient checkpointing (less memory)",
                                                       elem_id="train_lora_gradient_checkpointing")
        inputs["overwrite"] = gr.Checkbox(False, label="Start afresh (overwrite a LoRA of this name)",
                                          elem_id="train_lora_overwrite")
    with gr.Row():
        interrupt = gr.Button("Interrupt", elem_id="train_lora_interrupt")
        button = gr.Button("Train LoRA", variant="primary", elem_id="train_train_lora")
    return {"inputs": inputs, "button": button, "interrupt": interrupt}


def train_controlnet_form(services) -> dict:
    """ControlNet training (not in A1111; the fields of training/controlnet_training.py)."""
    inputs = {"name": gr.Textbox(label="Name (the file in models/ControlNet)", elem_id="train_controlnet_name"),
              "data_root": gr.Textbox(label="Dataset directory (images, captions as .txt beside them)",
                                      elem_id="train_controlnet_dataset_directory")}
    with gr.Row():
        inputs["condition_folder"] = gr.Textbox(label="Condition images directory (same file names)",
                                                elem_id="train_controlnet_condition_folder")
        inputs["annotator"] = gr.Dropdown([""] + services.controlnet.preprocessors.names(), value="",
                                          label="...or make them with a preprocessor",
                                          elem_id="train_controlnet_annotator")
    with gr.Row():
        inputs["template_filename"] = gr.Dropdown([""] + template_names(services), value="",
                                                  label="Prompt template (none: the caption)",
                                                  elem_id="train_controlnet_template")
        inputs["proportion_empty_prompts"] = gr.Slider(0, 1, value=0, step=0.05, label="Proportion of empty prompts",
                                                       elem_id="train_controlnet_empty_prompts")
    with gr.Row():
        inputs["learn_rate"] = gr.Textbox("1e-5", label="Learning rate", elem_id="train_controlnet_learn_rate")
        inputs["batch_size"] = gr.Number(1, label="Batch size", precision=0, elem_id="train_controlnet_batch_size")
        inputs["gradient_step"] = gr.Number(1, label="Gradient accumulation steps", precision=0,
                                            elem_id="train_controlnet_gradient_step")
    with gr.Row():
        inputs["width"] = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id="train_controlnet_width")
        inputs["height"] = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id="train_controlnet_height")
    with gr.Row():
        inputs["steps"] = gr.Number(1000, label="Steps", precision=0, elem_id="train_controlnet_steps")
        inputs["save_every"] = gr.Number(0, label="Save a copy every N steps, 0 to disable", precision=0,
                                         elem_id="train_controlnet_save_every")
        inputs["seed"] = gr.Number(-1, label="Seed (-1: random)", precision=0, elem_id="train_controlnet_seed")
    inputs.update(preview_fields("train_controlnet", "the first image's caption"))
    with gr.Row():
        inputs["gradient_checkpointing"] = gr.Checkbox(False, label="Gradient checkpointing (less memory)",
                                                       elem_id="train_controlnet_gradient_checkpointing")
        inputs["overwrite"] = gr.Checkbox(False, label="Start afresh (overwrite a ControlNet of this name)",
                                          elem_id="train_controlnet_overwrite")
    with gr.Row():
        interrupt = gr.Button("Interrupt", elem_id="train_controlnet_interrupt")
        button = gr.Button("Train ControlNet", variant="primary", elem_id="train_train_controlnet")
    return {"inputs": inputs, "button": button, "interrupt": interrupt}
