{{/*
Names and labels, in `helm create`'s vocabulary. Every per-service template
ranges over "taskstack.services" and passes a service context,
(dict "root" $ "name" "auth"), to the helpers below, so both services come
from one set of templates.
*/}}

{{- define "taskstack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name + chart name (once), truncated to leave room for the
"-<service>-migrate" and similar suffixes within 63 characters.
*/}}
{{- define "taskstack.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "taskstack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The services this chart installs. */}}
{{- define "taskstack.services" -}}
auth tasks
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "taskstack.labels" -}}
helm.sh/chart: {{ include "taskstack.chart" . }}
{{ include "taskstack.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskstack
{{- end }}

{{/* Labels every pod of the release carries (what the default-deny policy selects). */}}
{{- define "taskstack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskstack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of a service's objects: <fullname>-<service>. Argument: service context. */}}
{{- define "taskstack.serviceName" -}}
{{- printf "%s-%s" (include "taskstack.fullname" .root) .name }}
{{- end }}

{{/* Selector labels of one service's pods. Argument: service context. */}}
{{- define "taskstack.serviceSelectorLabels" -}}
{{ include "taskstack.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* All labels of one service's objects. Argument: service context. */}}
{{- define "taskstack.serviceLabels" -}}
{{ include "taskstack.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/*
The tag of a service's image: its own tag, else image.tag, else appVersion.
Argument: service context.
*/}}
{{- define "taskstack.imageTag" -}}
{{- $root := .root }}
{{- (index $root.Values .name).image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- end }}

{{/*
The image of a service: registry/repository:tag, and @digest when the
service's image.digest is set (the runtime then pulls exactly that image
whatever the tag has become; the tag stays for people reading the spec).
Argument: service context.
*/}}
{{- define "taskstack.image" -}}
{{- $root := .root }}
{{- $image := (index $root.Values .name).image }}
{{- $name := printf "%s:%s" $image.repository (include "taskstack.imageTag" .) }}
{{- if $root.Values.image.registry }}
{{- $name = printf "%s/%s" (trimSuffix "/" $root.Values.image.registry) $name }}
{{- end }}
{{- if $image.digest }}
{{- $name = printf "%s@%s" $name $image.digest }}
{{- end }}
{{- $name }}
{{- end }}

{{/*
The images' uvicorn --timeout-graceful-shutdown (the Dockerfile's CMD; the
tests check both agree). The grace period must cover preStop + this.
*/}}
{{- define "taskstack.uvicornGracefulShutdownSeconds" -}}
20
{{- end }}

{{/*
Seconds the startup probe's window allows beyond database.startupTimeout: the
interpreter's start and the services' imports, before the database wait begins.
*/}}
{{- define "taskstack.startupMarginSeconds" -}}
10
{{- end }}

{{/* The port uvicorn listens on in the images (their CMD's --port). */}}
{{- define "taskstack.containerPort" -}}
8000
{{- end }}

{{/* The URL clients use. */}}
{{- define "taskstack.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if .Values.ingress.enabled }}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host }}
{{- else if and .Values.httpRoute.enabled .Values.httpRoute.hostnames }}
{{- printf "https://%s" (first .Values.httpRoute.hostnames) }}
{{- end }}
{{- end }}

{{/* Where tasks reads auth's JWKS. */}}
{{- define "taskstack.jwksUrl" -}}
{{- if .Values.tasks.jwksUrl }}
{{- .Values.tasks.jwksUrl }}
{{- else }}
{{- printf "http://%s-auth:%v/.well-known/jwks.json" (include "taskstack.fullname" .) .Values.service.port }}
{{- end }}
{{- end }}

{{/* Directory auth's signing keys are mounted at (AUTH_SIGNING_KEYS_DIR). */}}
{{- define "taskstack.signingKeysDir" -}}
/etc/taskstack/signing-keys
{{- end }}

{{/*
Secrets: the name of the Secret each setting comes from, and whether the
chart creates it (only when no existingSecret is named).
*/}}
{{- define "taskstack.databaseSecretName" -}}
{{- default (printf "%s-database" (include "taskstack.fullname" .)) .Values.database.existingSecret }}
{{- end }}

{{- define "taskstack.authSecretName" -}}
{{- default (printf "%s-auth" (include "taskstack.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "taskstack.signingKeysSecretName" -}}
{{- default (printf "%s-auth-signing-keys" (include "taskstack.fullname" .)) .Values.auth.signingKeys.existingSecret }}
{{- end }}

{{- define "taskstack.tasksSecretName" -}}
{{- default (printf "%s-tasks" (include "taskstack.fullname" .)) .Values.tasks.existingSecret }}
{{- end }}

{{/* The Secrets the chart creates from values, one name per line (development only). */}}
{{- define "taskstack.chartSecrets" -}}
{{- if not .Values.database.existingSecret }}database{{ "\n" }}{{ end }}
{{- if not .Values.auth.existingSecret }}auth.passwordPepper{{ "\n" }}{{ end }}
{{- if not .Values.auth.signingKeys.existingSecret }}auth.signingKeys{{ "\n" }}{{ end }}
{{- if not .Values.tasks.existingSecret }}tasks.cursorSecret{{ "\n" }}{{ end }}
{{- end }}

{{/*
What the chart-created Secrets are made from, for the pods' checksum
annotation (generated values are kept across upgrades, so they do not count).
*/}}
{{- define "taskstack.secretInputs" -}}
{{- $v := .Values }}
{{- list $v.database $v.auth.existingSecret $v.auth.passwordPepper $v.tasks.existingSecret $v.tasks.cursorSecret | toJson }}
{{- end }}

{{/*
What auth's signing keys are, for auth's pods' checksum annotation: a change
rolls auth's pods (the service reads its keys once, at start-up), and only
theirs. Keys from values count as given, and a generated key by its kid (it is
kept across upgrades). An existing Secret counts as the cluster holds it, so
that `helm upgrade` after a key was added to it rolls the pods; without a
cluster (`helm template`) lookup finds nothing and the checksum stays put.
*/}}
{{- define "taskstack.signingKeysChecksum" -}}
{{- $keys := .Values.auth.signingKeys }}
{{- if $keys.existingSecret }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $keys.existingSecret }}
{{- (get $existing "data") | default dict | toJson | sha256sum }}
{{- else if $keys.keys }}
{{- $keys.keys | toJson | sha256sum }}
{{- else }}
{{- include "taskstack.signingKeyId" . | sha256sum }}
{{- end }}
{{- end }}

{{/* The kid that signs. */}}
{{- define "taskstack.signingKeyId" -}}
{{- if .Values.auth.signingKeys.keyId }}
{{- .Values.auth.signingKeys.keyId }}
{{- else if .Values.auth.signingKeys.existingSecret }}
{{- fail "auth.signingKeys.keyId is required with auth.signingKeys.existingSecret: the kid (file name without .pem) that signs" }}
{{- else if .Values.auth.signingKeys.keys }}
{{- first (keys .Values.auth.signingKeys.keys | sortAlpha) }}
{{- else }}
{{- print "insecure-development" }}
{{- end }}
{{- end }}

{{/*
A generated development secret: the value of `key` in the existing Secret
`name` when there is one (so upgrades keep it), else a new random value that
carries the marker the services refuse in production.
Argument: (list $root name key).
*/}}
{{- define "taskstack.generatedSecret" -}}
{{- $root := index . 0 }}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (index . 1) }}
{{- if and $existing (hasKey $existing.data (index . 2)) }}
{{- index $existing.data (index . 2) | b64dec }}
{{- else }}
{{- printf "insecure-development-%s" (randAlphaNum 40) }}
{{- end }}
{{- end }}

{{/*
One service's server settings as JSON: the shared `server` block with the
service's own `server` keys over it, key by key (Helm's merge would let a
shared value replace a service's 0).
Argument: service context.
*/}}
{{- define "taskstack.server" -}}
{{- $server := deepCopy (.root.Values.server | default dict) }}
{{- range $key, $value := (index .root.Values .name).server | default dict }}
{{- $_ := set $server $key $value }}
{{- end }}
{{- $server | toJson }}
{{- end }}

{{/*
The plain configuration of one service, as a YAML map NAME: "value"; the
ConfigMap holds it and the migration Job (which runs before the ConfigMap
exists) takes it inline, without the service's keys, JWKS and server settings.
Argument: service context, plus "migrate" true for the Job.
*/}}
{{- define "taskstack.config" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $svc := index $v .name }}
{{- $issuer := default (include "taskstack.publicUrl" $root) $v.tokenIssuer }}
ENVIRONMENT: {{ $v.environment | quote }}
LOG_LEVEL: {{ $v.logLevel | quote }}
ACCESS_LOG: {{ $v.accessLog | toString | quote }}
{{- if $issuer }}
TOKEN_ISSUER: {{ $issuer | quote }}
{{- end }}
TOKEN_AUDIENCE: {{ $v.tokenAudience | quote }}
CORS_ALLOWED_ORIGINS: {{ join "," $v.corsAllowedOrigins | quote }}
FORWARDED_ALLOW_IPS: {{ $v.forwardedAllowIps | quote }}
MAX_BODY_BYTES: {{ $v.maxBodyBytes | int64 | toString | quote }}
READINESS_TIMEOUT: {{ $v.readinessTimeout | toString | quote }}
DATABASE_POOL_SIZE: {{ $v.database.poolSize | int64 | toString | quote }}
DATABASE_MAX_OVERFLOW: {{ $v.database.maxOverflow | int64 | toString | quote }}
DATABASE_POOL_TIMEOUT: {{ $v.database.poolTimeout | toString | quote }}
DATABASE_CONNECT_TIMEOUT: {{ $v.database.connectTimeout | int64 | toString | quote }}
DATABASE_STARTUP_TIMEOUT: {{ $v.database.startupTimeout | toString | quote }}
{{- if ne $v.database.transactionPooler "auto" }}
DATABASE_TRANSACTION_POOLER: {{ $v.database.transactionPooler | quote }}
{{- end }}
{{- if $v.database.trustedNetwork }}
DATABASE_TRUSTED_NETWORK: "true"
{{- end }}
{{- if .migrate }}
DATABASE_MIGRATION_LOCK_TIMEOUT_SECONDS: {{ $v.migrations.lockTimeoutSeconds | toString | quote }}
{{- end }}
{{- if $v.telemetry.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ $v.telemetry.otlpEndpoint | quote }}
{{- /* said, not left to a default: the endpoint's port (4318) is OTLP/HTTP's */}}
OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf"
OTEL_SERVICE_NAME: {{ printf "taskstack-%s" .name | quote }}
{{- end }}
{{- if not .migrate }}
{{- /* uvicorn reads UVICORN_*; the migration Jobs run no server */}}
{{- $server := include "taskstack.server" . | fromJson }}
ADMISSION_LIMIT: {{ $server.admissionLimit | int64 | toString | quote }}
ADMISSION_QUEUE_LIMIT: {{ $server.admissionQueueLimit | int64 | toString | quote }}
ADMISSION_QUEUE_TIMEOUT_SECONDS: {{ $server.admissionQueueTimeoutSeconds | toString | quote }}
ADMISSION_RETRY_AFTER_SECONDS: {{ $server.retryAfterSeconds | int64 | toString | quote }}
UVICORN_LIMIT_CONCURRENCY: {{ $server.maxConnections | int64 | toString | quote }}
UVICORN_BACKLOG: {{ $server.backlog | int64 | toString | quote }}
UVICORN_TIMEOUT_KEEP_ALIVE: {{ $server.keepAliveSeconds | int64 | toString | quote }}
{{- end }}
{{- if .migrate }}
{{- /* migrations need the database only: no keys, no JWKS */}}
{{- else if eq .name "auth" }}
AUTH_SIGNING_KEYS_DIR: {{ include "taskstack.signingKeysDir" $root | quote }}
AUTH_SIGNING_KEY_ID: {{ include "taskstack.signingKeyId" $root | quote }}
{{- end }}
{{- if and (eq .name "tasks") (not .migrate) }}
JWKS_URL: {{ include "taskstack.jwksUrl" $root | quote }}
TASKS_MAX_TASKS_PER_USER: {{ $svc.maxTasksPerUser | int64 | toString | quote }}
TASKS_RATE_LIMIT_PER_MINUTE: {{ $svc.rateLimit.requestsPerMinute | int64 | toString | quote }}
TASKS_RATE_LIMIT_SYNC_SECONDS: {{ $svc.rateLimit.syncSeconds | toString | quote }}
{{- end }}
{{- range $name, $value := merge (dict) $svc.extraEnv $v.extraEnv }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/*
The secret environment of one service's containers (secretKeyRef only).
Argument: service context plus "migrate" (true for the migration Job, which
needs the database URLs and nothing else).
*/}}
{{- define "taskstack.secretEnv" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "taskstack.databaseSecretName" $root }}
      key: {{ $v.database.urlKey }}
{{- if .migrate }}
- name: DATABASE_MIGRATION_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "taskstack.databaseSecretName" $root }}
      key: {{ $v.database.migrationUrlKey }}
      optional: true
{{- else if eq .name "auth" }}
- name: AUTH_PASSWORD_PEPPER
  valueFrom:
    secretKeyRef:
      name: {{ include "taskstack.authSecretName" $root }}
      key: {{ $v.auth.passwordPepperKey }}
{{- else if eq .name "tasks" }}
- name: TASKS_CURSOR_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "taskstack.tasksSecretName" $root }}
      key: {{ $v.tasks.cursorSecretKey }}
{{- end }}
{{- end }}

{{/* Pod-level settings every pod of the release shares. */}}
{{- define "taskstack.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Public path prefixes and the service each routes to: "prefix service" per line. */}}
{{- define "taskstack.routes" -}}
/v1/auth auth
/.well-known auth
/v1/tasks tasks
{{- end }}

{{/* NetworkPolicy egress rules every pod of the release needs: DNS. */}}
{{- define "taskstack.egressDns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- with .Values.networkPolicy.dns.nodeLocalCache }}
{{- if .enabled }}
# NodeLocal DNSCache answers on the node, at a link-local address (and, in its
# iptables mode, at kube-dns's Service IP without DNAT): neither is a pod the
# rule above selects, so without this rule no name resolves, the Neon host's
# included.
- to:
    {{- range .addresses }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end }}
{{- end }}
{{- end }}

{{/*
OTEL_RESOURCE_ATTRIBUTES of a service's container: who sent a span, in the
semantic conventions' names. The pod's name and namespace come from the
Downward API variables defined before it in the container's env, which the
kubelet substitutes for $(POD_NAME) and $(POD_NAMESPACE); telemetry.resourceAttributes
adds or overrides attributes. Argument: service context.
*/}}
{{- define "taskstack.resourceAttributes" -}}
{{- $v := .root.Values }}
{{- $attributes := dict
  "service.namespace" "taskstack"
  "service.version" (include "taskstack.imageTag" .)
  "deployment.environment.name" $v.environment
  "k8s.pod.name" "$(POD_NAME)"
  "k8s.namespace.name" "$(POD_NAMESPACE)"
}}
{{- $pairs := list }}
{{- range $key, $value := merge (dict) $v.telemetry.resourceAttributes $attributes }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* NetworkPolicy egress rule to the database. */}}
{{- define "taskstack.egressDatabase" -}}
{{- $db := .Values.networkPolicy.database }}
- to:
    {{- if $db.podLabels }}
    - podSelector:
        matchLabels:
          {{- toYaml $db.podLabels | nindent 10 }}
      {{- if $db.namespace }}
      namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $db.namespace }}
      {{- end }}
    {{- else }}
    {{- range $db.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- end }}
  ports:
    - {port: {{ $db.port }}, protocol: TCP}
{{- end }}
