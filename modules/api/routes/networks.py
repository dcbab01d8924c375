"""What a prompt can call on: GET /sdapi/v1/prompt-styles, /sd-vae, /embeddings, /loras and /hypernetworks, and
POST /refresh-vae, /refresh-embeddings and /refresh-loras to read their folders again."""
from __future__ import annotations

from fastapi import APIRouter

from modules.services import Services


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    @router.get("/prompt-styles")
    def prompt_styles():
        return services.networks.styles.api_list()

    @router.get("/sd-vae")
    def sd_vae():
        return services.networks.vaes.api_list()

    @router.post("/refresh-vae")
    def refresh_vae():
        services.networks.vaes.refresh()
        return {}

    @router.get("/embeddings")
    def embeddings():
        from modules.networks.textual_inversion import encoder_widths

        model = services.models.current
        database = services.networks.embeddings
        database.refresh()
        return database.api_listing(encoder_widths(model.pipeline) if model is not None else None)

    @router.post("/refresh-embeddings")
    def refresh_embeddings():
        services.networks.embeddings.refresh()
        return {}

    @router.get("/loras")
    def loras():
        from modules.networks.lora import api_list

        return api_list(services.networks.loras)

    @router.post("/refresh-loras")
    def refresh_loras():
        services.networks.loras.refresh()
        return {}

    @router.get("/hypernetworks")
    def hypernetworks():
        from modules.networks.hypernetwork import api_list

        return api_list(services.networks.hypernetworks)

    return router
