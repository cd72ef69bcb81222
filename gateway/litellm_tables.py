"""What `gateway config import-litellm` knows of LiteLLM's vocabulary: its provider prefixes (with
the gateway kind, default base URL and LiteLLM's default key variable of each), Bedrock's AWS
params, and the settings keys the importer maps (any other key is reported as not carried over).
"""

from __future__ import annotations

import re

AZURE_API_VERSION = "2024-10-21"

# LiteLLM provider prefix -> (gateway kind, default base_url, LiteLLM's default key variable)
PROVIDERS: dict[str, tuple[str, str, str | None]] = {
    "openai": ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "text-completion-openai": ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "azure": ("azure", "", "AZURE_API_KEY"),
    "anthropic": ("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
    "ollama": ("openai", "http://localhost:11434", None),
    "ollama_chat": ("openai", "http://localhost:11434", None),
    "hosted_vllm": ("openai", "", None),
    "vllm": ("openai", "", None),
    "openrouter": ("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "groq": ("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "mistral": ("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "deepseek": ("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "together_ai": ("openai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "fireworks_ai": ("openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
    "xai": ("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    "perplexity": ("openai", "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "gemini": ("gemini", "", "GEMINI_API_KEY"),  # the gateway's default: generativelanguage.googleapis.com
}
# Bedrock's params (LiteLLM passes them to boto3); the AWS SDKs' own region variables.
AWS_KEYS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
             "aws_profile_name", "aws_role_name", "aws_session_name", "aws_web_identity_token",
             "aws_sts_endpoint", "aws_bedrock_runtime_endpoint"}
GATEWAY_REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
ARN_REGION = re.compile(r"^arn:aws[a-z-]*:bedrock:([a-z0-9-]+):")
# litellm_params understood here; any other key of a deployment is reported.
DEPLOYMENT_KEYS = {"model", "api_base", "api_key", "api_version", "rpm", "tpm", "weight", "timeout",
                    "extra_headers", "organization"}
ROUTER_KEYS = {"fallbacks", "num_retries", "timeout", "model_group_alias", "routing_strategy"}
LITELLM_KEYS = {"fallbacks", "num_retries", "request_timeout", "cache", "cache_params"}
