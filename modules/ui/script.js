// Small A1111 behaviours Gradio has no option for: keyboard shortcuts in the prompt boxes, hover texts,
// and the --theme flag. Loaded in <head> through mount_gradio_app(head=...).
(function () {
    "use strict";

    const settings = window.webuiSettings || {};
    if (settings.theme) {
        // A1111's way: Gradio picks the theme from the ?__theme= query parameter.
        const url = new URL(window.location.href);
        if (!url.searchParams.has("__theme")) {
            url.searchParams.set("__theme", settings.theme);
            window.location.replace(url.href);
        }
    }

    function visibleButton(id) {
        const button = document.getElementById(id);
        return button && button.offsetParent !== null ? button : null;
    }

    // Ctrl+Enter generates, Alt+Enter skips, Esc interrupts, in <tab>_prompt and <tab>_neg_prompt.
    document.addEventListener("keydown", function (event) {
        const box = event.target && event.target.closest ? event.target.closest("[id$='_prompt']") : null;
        const match = box && box.id.match(/^(.+?)_(neg_)?prompt$/);
        if (!match) {
            return;
        }
        const tab = match[1];
        let button = null;
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
            button = visibleButton(tab + "_generate");
        } else if (event.key === "Enter" && event.altKey) {
            button = visibleButton(tab + "_skip");
        } else if (event.key === "Escape") {
            button = visibleButton(tab + "_interrupt");
        }
        if (button) {
            event.preventDefault();
            button.click();
        }
    }, true);

    const titles = {
        "paste": "Read generation parameters from prompt or last generation if prompt is empty into user interface.",
        "refresh_sd_model_checkpoint": "Refresh the list of checkpoints",
        "txt2img_random_seed": "Set seed to -1, which will cause a new random number to be used every time",
        "txt2img_reuse_seed": "Reuse seed from last generation, mostly useful if it was randomized",
        "txt2img_random_subseed": "Set variation seed to -1 (random)",
        "txt2img_reuse_subseed": "Reuse variation seed from last generation",
        "txt2img_res_switch_btn": "Switch width/height",
        "txt2img_generate": "Generate (Ctrl+Enter)",
        "txt2img_interrupt": "Stop processing this job (Esc)",
        "txt2img_skip": "Skip the current batch (Alt+Enter)",
        "refresh_sd_vae": "Refresh the list of VAEs",
        "txt2img_style_apply": "Apply all selected styles to the prompts, and clear the selection",
        "txt2img_style_create": "Edit styles",
        "txt2img_style_copy_from_prompt": "Copy the main prompts into the style",
        "txt2img_extra_sort_order": "Invert sort order",
        "txt2img_extra_refresh": "Refresh the lists of textual inversions, checkpoints and LoRAs",
    };

    function applyTitles() {
        for (const [id, title] of Object.entries(titles)) {
            const element = document.getElementById(id);
            if (element && !element.title) {
                element.title = title;
            }
        }
    }

    new MutationObserver(applyTitles).observe(document.documentElement, {childList: true, subtree: true});
})();
