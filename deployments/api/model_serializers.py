"""The model registry's request and answer shapes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from deployments.api.serializers import CatalogModelSerializer
from deployments.models import CatalogModel, ModelUpload, ModelUploadFile


class DeclaredFileSerializer(serializers.Serializer):
    path = serializers.CharField(max_length=255, trim_whitespace=False, help_text="Relative to the model directory, e.g. config.json.")
    size = serializers.IntegerField(min_value=0, max_value=2**50, help_text="In bytes.")
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$", help_text="Lowercase hex digest of the whole file.")


class UploadCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    files = DeclaredFileSerializer(many=True)
    task = serializers.ChoiceField(
        choices=CatalogModel.Task.choices, required=False, default="", help_text="Empty: chat for *ForCausalLM, else embedding."
    )
    license = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    description = serializers.CharField(max_length=300, required=False, default="", allow_blank=True)


class UploadFileSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelUploadFile
        fields = ["path", "size", "sha256", "received", "verified"]
        read_only_fields = fields


class UploadSerializer(serializers.ModelSerializer):
    files = serializers.SerializerMethodField()
    problems = serializers.ListField(child=serializers.CharField(), read_only=True)
    model = serializers.CharField(source="model_id", read_only=True, allow_null=True, help_text="The registered model, once complete.")

    class Meta:
        model = ModelUpload
        fields = ["id", "name", "task", "license", "description", "status", "problems", "model", "files", "created_at", "expires_at"]
        read_only_fields = fields

    @extend_schema_field(UploadFileSerializer(many=True))
    def get_files(self, upload: ModelUpload) -> list[dict[str, Any]]:
        files = ModelUploadFile.objects.for_org(upload.organization).filter(upload=upload)
        return list(UploadFileSerializer(files, many=True).data)


class ChunkQuerySerializer(serializers.Serializer):
    offset = serializers.IntegerField(min_value=0, max_value=2**50, help_text="Where this chunk starts in the file.")


class HubModelCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="What deployments call the model.")
    repo_id = serializers.CharField(max_length=200, help_text="The Hugging Face repo, owner/name.")
    revision = serializers.CharField(max_length=255, help_text="A commit hash (pins the files), branch or tag.")
    task = serializers.ChoiceField(choices=CatalogModel.Task.choices, help_text="What it serves; not read from files fetched later.")
    memory_gb = serializers.IntegerField(
        min_value=1, max_value=10_000, required=False, default=1, help_text="What a replica needs (weights, cache, activations), in GB."
    )
    context_length = serializers.IntegerField(min_value=1, max_value=10_000_000, required=False, default=2048)
    license = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    description = serializers.CharField(max_length=300, required=False, default="", allow_blank=True)


class RegisteredModelSerializer(CatalogModelSerializer):
    class Meta(CatalogModelSerializer.Meta):
        fields = [*CatalogModelSerializer.Meta.fields, "revision", "runtime", "memory_gb", "created_at"]
        read_only_fields = fields
