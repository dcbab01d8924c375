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
        "txt2img_tab": "Send the image's generation parameters to txt2img",
        "img2img_tab": "Send the image and its generation parameters to img2img",
        "inpaint_tab": "Send the image and its generation parameters to img2img's Inpaint tab",
        "extras_tab": "Send the image to Extras",
        "extras_generate": "Upscale and restore faces",
        "upscaling_res_switch_btn": "Switch width/height",
        "extras_refresh_upscalers": "Rescan the upscaler model folders",
    
    };
    // Buttons repeated per tab and ControlNet unit: hover text by the end of their elem_id.
    const suffixTitles = {
        "_controlnet_trigger_preprocessor": "Run preprocessor",
        "_controlnet_refresh_models": "Refresh models",
    };

    function applyTitles() {
        for (const [id, title] of Object.entries(titles)) {
            const element = document.getElementById(id);
            if (element && !element.title) {
                element.title = title;
            }
        }
        for (const [suffix, title] of Object.entries(suffixTitles)) {
            document.querySelectorAll(`[id$="${suffix}"]:not([title])`).forEach(function (element) {
                element.title = title;
            });
        }
    }

    new MutationObserver(applyTitles).observe(document.documentElement, {childList: true, subtree: true});
})();

// ---- img2img tab, Hires. fix and Refiner (modules/ui/img2img.py, accordions.py) -------------------------
(function () {
    "use strict";

    // Which of `panels` ({key: elem_id of a gr.Tab}) is shown; A1111 reads the mode of img2img the same way.
    window.img2imgSelectedTab = function (panels, fallback) {
        for (const [key, id] of Object.entries(panels)) {
            const panel = document.getElementById(id);
            if (panel && panel.offsetParent !== null) {
                return key;
            }
        }
        return fallback;
    };

    // The inpaint controls are shown on the inpaint sub-tabs only (style.css keys on this attribute).
    window.img2imgShowModeControls = function () {
        const modes = {
            img2img: "img2img_img2img_tab", sketch: "img2img_img2img_sketch_tab", inpaint: "img2img_inpaint_tab",
            inpaint_sketch: "img2img_inpaint_sketch_tab", inpaint_upload: "img2img_inpaint_upload_tab",
            batch: "img2img_batch_tab",
        };
        // The newly selected panel is laid out on the next frame.
        requestAnimationFrame(function () {
            document.body.dataset.img2imgMode = window.img2imgSelectedTab(modes, "img2img");
        });
    };

    // A1111's InputAccordion: a checkbox in the accordion header that enables it (Hires. fix, Refiner). The
    // value lives in a hidden gr.Checkbox (class "for-<accordion id>"); opening the accordion ticks it until
    // the header checkbox is used directly.
    function parts(accordion) {
        return {
            labelWrap: accordion.querySelector(".label-wrap"),
            hidden: document.querySelector(".for-" + accordion.id + " input[type=checkbox]"),
        };
    }

    function setHidden(accordion, checked) {
        const hidden = parts(accordion).hidden;
        if (hidden && hidden.checked !== checked) {
            hidden.click();
        }
    }

    function setupInputAccordion(accordion) {
        const {labelWrap, hidden} = parts(accordion);
        if (accordion.visibleCheckbox || !labelWrap || !hidden) {
            return;
        }
        const box = document.createElement("input");
        box.type = "checkbox";
        box.id = accordion.id + "-visible-checkbox";
        box.className = "input-accordion-checkbox";
        box.checked = hidden.checked;
        labelWrap.insertBefore(box, labelWrap.firstChild);
        accordion.visibleCheckbox = box;
        accordion.linked = true;
        box.addEventListener("click", function (event) {
            event.stopPropagation();   // ticking the box does not fold the accordion
            accordion.linked = false;
            setHidden(accordion, box.checked);
        });
        new MutationObserver(function () {
            const open = labelWrap.classList.contains("open");
            if (accordion.linked && open !== box.checked) {
                box.checked = open;
                setHidden(accordion, open);
            }
        }).observe(labelWrap, {attributes: true, attributeFilter: ["class"]});
    }

    // Called when the hidden checkbox changes (a click, or ↙️ paste): the header shows it, and it opens.
    window.inputAccordionChecked = function (id, checked) {
        const accordion = document.getElementById(id);
        if (!accordion) {
            return;
        }
        setupInputAccordion(accordion);
        if (accordion.visibleCheckbox) {
            accordion.visibleCheckbox.checked = checked;
        }
        const labelWrap = accordion.querySelector(".label-wrap");
        if (checked && labelWrap && !labelWrap.classList.contains("open")) {
            labelWrap.click();
        }
    };

    new MutationObserver(function () {
        document.querySelectorAll(".input-accordion").forEach(setupInputAccordion);
    }).observe(document.documentElement, {childList: true, subtree: true});
})();
// ---- end img2img / Hires. fix / Refiner -------------------------------------------------------------------
