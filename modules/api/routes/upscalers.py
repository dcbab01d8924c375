"""What images can be upscaled and restored with: GET /sdapi/v1/upscalers, /latent-upscale-modes, /face-restorers
and /realesrgan-models."""
from __future__ import annotations

from fastapi import APIRouter

from modules.api import models
from modules.services import Services


def create_router(services: Services) -> APIRouter:
    router = APIRouter()

    @router.get("/upscalers")
    def upscalers():
        services.upscalers.refresh()
        return services.upscalers.api_list()

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes():
        from modules.postprocess.upscalers import latent_api_list

        return latent_api_list()

    @router.get("/face-restorers")
    def face_restorers():
        return services.restorers.api_list()

    @router.get("/realesrgan-models", response_model=list[models.RealesrganItem])
    def realesrgan_models():
        services.upscalers.refresh()
        return [{"name": item["name"], "path": item["model_path"], "scale": item["scale"]}
                for item in services.upscalers.api_list() if item["model_name"] == "RealESRGAN"]

    return router
