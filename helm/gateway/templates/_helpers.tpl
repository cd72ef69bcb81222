{{/* Names, labels, derived settings and the checks values.schema.json cannot express. */}}

{{- define "gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every object; `component` tells the gateway from the bundled Redis. */}}
{{- define "gateway.labels" -}}
helm.sh/chart: {{ include "gateway.chart" . }}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "gateway.name" . }}
{{- end }}

{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "gateway.redis.fullname" -}}
{{- printf "%s-redis" (include "gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gateway.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "gateway.redis.labels" -}}
helm.sh/chart: {{ include "gateway.chart" . }}
{{ include "gateway.redis.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "gateway.name" . }}
{{- end }}

{{- define "gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret whose keys become the gateway's environment: the user's or the chart's. */}}
{{- define "gateway.secretName" -}}
{{- default (include "gateway.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The store URL written into the config file: the bundled Redis without a password, the
external URL, or "" (embedded store). A URL that carries a secret (the bundled Redis's password,
redis.existingSecret, redis.cluster.existingSecret) reaches the pod as GATEWAY_REDIS_URL instead,
which the gateway lets override the file, so no password is ever in the ConfigMap. */}}
{{- define "gateway.redisURL" -}}
{{- if .Values.redis.bundled.enabled }}
{{- if not .Values.redis.bundled.auth.enabled }}
{{- printf "redis://%s:6379/0" (include "gateway.redis.fullname" .) }}
{{- end }}
{{- else if not (or .Values.redis.existingSecret .Values.redis.cluster.existingSecret) }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{/* The Secret holding the bundled Redis's password: the user's, or the one the chart generates. */}}
{{- define "gateway.redis.secretName" -}}
{{- default (include "gateway.redis.fullname" .) .Values.redis.bundled.auth.existingSecret }}
{{- end }}

{{/* The bundled Redis's password for the chart's own Secret: kept from the Secret already in the
cluster (so an upgrade does not change it), else 32 random characters. */}}
{{- define "gateway.redis.password" -}}
{{- $key := .Values.redis.bundled.auth.existingSecretKey }}
{{- $found := lookup "v1" "Secret" .Release.Namespace (include "gateway.redis.fullname" .) }}
{{- if and $found $found.data (hasKey $found.data $key) }}
{{- index $found.data $key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* config.yaml: the user's `config` with the keys the chart owns filled in. */}}
{{- define "gateway.configFile" -}}
{{- $config := deepCopy .Values.config }}
{{- $server := deepCopy (default (dict) $config.server) }}
{{- $_ := set $server "host" "0.0.0.0" }}
{{- $_ := set $server "port" (int .Values.containerPort) }}
{{- $_ := set $config "server" $server }}
{{- $store := deepCopy (default (dict) $config.store) }}
{{- $_ := set $store "redis_url" (include "gateway.redisURL" .) }}
{{- $_ := set $config "store" $store }}
{{- toYaml $config }}
{{- end }}

{{- define "gateway.drainSeconds" -}}
{{- $server := default (dict) .Values.config.server }}
{{- if hasKey $server "drain_timeout_s" }}{{ int $server.drain_timeout_s }}{{ else }}30{{ end }}
{{- end }}

{{/* Must exceed drain + preStop, or the kubelet kills streams that are still draining. */}}
{{- define "gateway.terminationGracePeriodSeconds" -}}
{{- $floor := add (int (include "gateway.drainSeconds" .)) (int .Values.preStopSleepSeconds) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $floor 10 }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Checks that span several values, which JSON schema cannot compare. Each fails the render with a
message that names the values and says how to fix them.
*/}}
{{- define "gateway.validate" -}}
{{- $a := .Values.autoscaling }}
{{- if $a.enabled }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "gateway: autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- if not (or $a.targetCPUUtilizationPercentage $a.targetMemoryUtilizationPercentage $a.requestsPerSecond.enabled) }}
{{- fail "gateway: autoscaling is enabled but has no metric: set autoscaling.targetCPUUtilizationPercentage, autoscaling.targetMemoryUtilizationPercentage or autoscaling.requestsPerSecond.enabled" }}
{{- end }}
{{- end }}
{{- $external := list }}
{{- if .Values.redis.url }}{{ $external = append $external "redis.url" }}{{ end }}
{{- if .Values.redis.existingSecret }}{{ $external = append $external "redis.existingSecret" }}{{ end }}
{{- if .Values.redis.cluster.existingSecret }}{{ $external = append $external "redis.cluster.existingSecret" }}{{ end }}
{{- if and .Values.redis.bundled.enabled $external }}
{{- fail (printf "gateway: redis.bundled.enabled and an external Redis (%s) exclude each other: turn redis.bundled.enabled off to use the external one" (join ", " $external)) }}
{{- end }}
{{- if gt (len $external) 1 }}
{{- fail (printf "gateway: set only one external Redis, got %s" (join ", " $external)) }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) }}
{{- fail "gateway: set only one of podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable (set the other to null)" }}
{{- end }}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable) }}
{{- fail "gateway: podDisruptionBudget.enabled needs podDisruptionBudget.minAvailable or podDisruptionBudget.maxUnavailable" }}
{{- end }}
{{- $floor := add (int (include "gateway.drainSeconds" .)) (int .Values.preStopSleepSeconds) }}
{{- if le (int (include "gateway.terminationGracePeriodSeconds" .)) $floor }}
{{- fail (printf "gateway: terminationGracePeriodSeconds (%d) must exceed config.server.drain_timeout_s + preStopSleepSeconds (%d), or in-flight streams are killed mid-drain" (int .Values.terminationGracePeriodSeconds) $floor) }}
{{- end }}
{{- end }}
