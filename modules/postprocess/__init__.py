"""Work on finished images: upscalers, face restoration, and the Extras tab's jobs."""
