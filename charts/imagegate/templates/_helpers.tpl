{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "imagegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified release name: <release>-imagegate, or the release name when it says imagegate. */}}
{{- define "imagegate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "imagegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "imagegate.labels" -}}
helm.sh/chart: {{ include "imagegate.chart" . }}
app.kubernetes.io/name: {{ include "imagegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: imagegate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels for one component (webhook or operator): pass (dict "ctx" $ "component" "webhook"). */}}
{{- define "imagegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagegate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "imagegate.componentLabels" -}}
{{ include "imagegate.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "imagegate.webhook.fullname" -}}
{{- printf "%s-webhook" (include "imagegate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imagegate.operator.fullname" -}}
{{- printf "%s-operator" (include "imagegate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imagegate.webhook.serviceAccountName" -}}
{{- if .Values.webhook.serviceAccount.create -}}
{{- default (include "imagegate.webhook.fullname" .) .Values.webhook.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.webhook.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "imagegate.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "imagegate.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The TLS Secret the webhook serves with (made by the chart or by cert-manager). */}}
{{- define "imagegate.webhook.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "imagegate.webhook.fullname" .)) .Values.webhook.tls.secretName -}}
{{- end -}}

{{- define "imagegate.webhook.certificateName" -}}
{{- printf "%s-tls" (include "imagegate.webhook.fullname" .) -}}
{{- end -}}

{{/* True (non-empty) when the webhook is served outside the cluster (url mode). */}}
{{- define "imagegate.webhook.external" -}}
{{- if .Values.webhook.external.url -}}true{{- end -}}
{{- end -}}

{{/* DNS names the serving certificate must carry for the in-cluster Service. */}}
{{- define "imagegate.webhook.dnsNames" -}}
{{- $svc := include "imagegate.webhook.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson -}}
{{- end -}}

{{/* image reference: registry/repository:tag or @digest (digest wins). */}}
{{- define "imagegate.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Pod anti-affinity by component: soft, hard or none. Pass (dict "ctx" $ "component" "webhook" "mode" "soft"). */}}
{{- define "imagegate.antiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "imagegate.selectorLabels" (dict "ctx" .ctx "component" .component) | fromYaml)) -}}
{{- if eq .mode "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{ toYaml $term | nindent 6 | trim }}
{{- else if eq .mode "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end -}}
{{- end -}}

{{/* Deep inspection: where layer indexes live and how much they may take (values.layers). */}}
{{- define "imagegate.layersEnv" -}}
- name: IMAGEGATE_LAYERS_CACHE_DIR
  value: /var/cache/imagegate/layers
- name: IMAGEGATE_LAYERS_MAX_DISK_BYTES
  value: {{ .Values.layers.maxDiskBytes | int64 | quote }}
- name: IMAGEGATE_LAYERS_MAX_LAYER_BYTES
  value: {{ .Values.layers.maxLayerBytes | int64 | quote }}
- name: IMAGEGATE_LAYERS_DOWNLOAD_CONCURRENCY
  value: {{ .Values.layers.downloadConcurrency | quote }}
{{- end }}

{{/* How the serving certificate is made: url (webhook.external.url), certManager (also the
deprecated certManager.enabled), or certificates.mode (rotate, external, helm). */}}
{{- define "imagegate.certificates.mode" -}}
{{- if .Values.webhook.external.url -}}url
{{- else if .Values.certManager.enabled -}}certManager
{{- else -}}{{ .Values.certificates.mode }}
{{- end -}}
{{- end -}}

{{/* Names of both webhook configurations (ValidatingWebhookConfiguration and
MutatingWebhookConfiguration share the name), comma-separated. */}}
{{- define "imagegate.webhook.configurationNames" -}}
{{- include "imagegate.webhook.fullname" . -}}
{{- end -}}

{{/* The system PriorityClasses (as a JSON list) the chart's Pods use. Outside kube-system the
API server admits Pods of these classes only where a ResourceQuota scoped to them exists. */}}
{{- define "imagegate.systemPriorityClasses" -}}
{{- $classes := list -}}
{{- $names := list .Values.webhook.priorityClassName -}}
{{- if .Values.operator.enabled -}}{{- $names = append $names .Values.operator.priorityClassName -}}{{- end -}}
{{- range $names -}}
{{- if has . (list "system-cluster-critical" "system-node-critical") -}}
{{- $classes = append $classes . -}}
{{- end -}}
{{- end -}}
{{- $classes | uniq | sortAlpha | toJson -}}
{{- end -}}

{{/* True (non-empty) when the API server serves this group/version/Kind at render time (an
upgrade, or CRDs installed beforehand). `helm install` cannot create a custom resource in the
same release that creates its CRD (the REST mapping is built before the CRD exists), so the
chart's own custom resources are then made by the post-install bootstrap Job instead. */}}
{{- define "imagegate.served" -}}
{{- if .ctx.Capabilities.APIVersions.Has .gvk -}}true{{- end -}}
{{- end -}}

{{/* registryCA: the volume (in the Pod's volumes list). */}}
{{- define "imagegate.registryCA.volume" -}}
{{- $ca := .Values.registryCA -}}
{{- if and $ca.configMap $ca.secret -}}
{{- fail "registryCA: set configMap or secret, not both" -}}
{{- end -}}
{{- if $ca.configMap }}
- name: registry-ca
  configMap:
    name: {{ $ca.configMap }}
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- else if $ca.secret }}
- name: registry-ca
  secret:
    secretName: {{ $ca.secret }}
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- end }}
{{- end -}}

{{/* registryCA: the read-only mount. */}}
{{- define "imagegate.registryCA.mount" -}}
{{- if or .Values.registryCA.configMap .Values.registryCA.secret }}
- name: registry-ca
  mountPath: /etc/imagegate/registry-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* registryCA: the registry client trusts every PEM file in the mounted directory. */}}
{{- define "imagegate.registryCA.env" -}}
{{- if or .Values.registryCA.configMap .Values.registryCA.secret }}
- name: IMAGEGATE_REGISTRY_CA_FILE
  value: /etc/imagegate/registry-ca
{{- end }}
{{- end -}}

{{/* A hook Job's Pod spec basics: the project image, restricted, no retries forever. */}}
{{- define "imagegate.hookPodSecurity" -}}
securityContext:
  {{- toYaml .Values.webhook.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
