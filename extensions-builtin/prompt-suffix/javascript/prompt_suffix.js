// Prompt suffix (example extension): a hint on the suffix boxes (txt2img and img2img) once Gradio has built them.
document.addEventListener("DOMContentLoaded", () => {
    const observer = new MutationObserver(() => {
        const boxes = document.querySelectorAll("[id$='_prompt_suffix_suffix'] textarea");
        for (const box of boxes) {
            box.title = "Appended to the prompt, after a comma, when the checkbox is ticked";
        }
        if (boxes.length >= 2) observer.disconnect();
    });
    observer.observe(document.body, {childList: true, subtree: true});
});
