"""The model registry in the management API: thin views over deployments.uploads and
deployments.registry."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from deployments import registry, uploads
from deployments.api import model_serializers as s
from deployments.model_catalog import ensure_builtin_models, offered_to, visible_to
from deployments.models import ModelUpload
from tenancy.api.serializers import validated
from tenancy.api.views import OrgAPIView
from tenancy.models import Role


class ModelListView(OrgAPIView):
    serializer_class = s.RegisteredModelSerializer
    write_role = Role.MEMBER

    @extend_schema(operation_id="models_list", responses=s.RegisteredModelSerializer(many=True))
    def get(self, request: Request) -> Response:
        ensure_builtin_models()
        page = self.paginate_queryset(offered_to(self.ctx.organization, staff=request.user.is_staff))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        operation_id="models_register_from_hub",
        request=s.HubModelCreateSerializer,
        responses={201: s.RegisteredModelSerializer},
        description="Registers a model by Hugging Face repo id and revision; each replica fetches its files when it starts.",
    )
    def post(self, request: Request) -> Response:
        model = registry.register_from_hub(self.ctx, **validated(s.HubModelCreateSerializer, request.data))
        return Response(self.get_serializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetailView(OrgAPIView):
    serializer_class = s.RegisteredModelSerializer
    write_role = Role.MEMBER

    def get(self, request: Request, model_id: str) -> Response:
        return Response(self.get_serializer(get_object_or_404(visible_to(self.ctx.organization), pk=model_id)).data)

    @extend_schema(description="Refused (409) while a deployment uses the model; built-in models cannot be deleted (404).")
    def delete(self, request: Request, model_id: str) -> Response:
        registry.delete_model(self.ctx, get_object_or_404(registry.registered_models(self.ctx.organization), pk=model_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class UploadAPIView(OrgAPIView):
    serializer_class = s.UploadSerializer
    write_role = Role.MEMBER

    def get_upload(self) -> ModelUpload:
        return get_object_or_404(uploads.uploads(self.ctx.organization), pk=self.kwargs["upload_id"])


class UploadListView(UploadAPIView):
    @extend_schema(
        request=s.UploadCreateSerializer,
        responses={201: s.UploadSerializer},
        description="Starts an upload of a Hugging Face-layout directory; every file is declared here with its size and sha256.",
    )
    def post(self, request: Request) -> Response:
        data = validated(s.UploadCreateSerializer, request.data)
        files = [uploads.DeclaredFile(**file) for file in data.pop("files")]
        upload = uploads.start_upload(self.ctx, files=files, **data)
        return Response(self.get_serializer(upload).data, status=status.HTTP_201_CREATED)


class UploadDetailView(UploadAPIView):
    @extend_schema(description="The upload's status and, per file, how many bytes arrived: a resumed upload continues from there.")
    def get(self, request: Request, upload_id: str) -> Response:
        return Response(self.get_serializer(self.get_upload()).data)


class UploadChunkView(UploadAPIView):
    serializer_class = s.UploadFileSerializer

    @extend_schema(
        operation_id="model_upload_chunk",
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[OpenApiParameter("offset", int, OpenApiParameter.QUERY, required=True, description="Where this chunk starts.")],
        responses={
            200: s.UploadFileSerializer,
            422: OpenApiResponse(description="The file's sha256 did not match; its bytes were discarded."),
        },
        description="A chunk of the file's raw bytes at `offset` (the file's `received` so far). The last chunk triggers the sha256 check.",
    )
    def put(self, request: Request, upload_id: str, file_path: str) -> Response:
        upload = self.get_upload()  # a foreign id is 404 before the body is judged
        offset = validated(s.ChunkQuerySerializer, request.query_params)["offset"]
        entry = uploads.receive_chunk(self.ctx, upload, path=file_path, offset=offset, data=request.body)
        return Response(self.get_serializer(entry).data)


class UploadCompleteView(UploadAPIView):
    serializer_class = s.RegisteredModelSerializer

    @extend_schema(
        request=None,
        responses={
            201: s.RegisteredModelSerializer,
            422: OpenApiResponse(description="Every problem with the files; the upload fails and its files are removed."),
        },
        description="Checks the directory and registers the model.",
    )
    def post(self, request: Request, upload_id: str) -> Response:
        model = uploads.complete_upload(self.ctx, self.get_upload())
        return Response(self.get_serializer(model).data, status=status.HTTP_201_CREATED)
