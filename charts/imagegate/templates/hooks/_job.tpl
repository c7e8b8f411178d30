{{/* A hook Job running `imagegate ARGS` with the project image, restricted like the webhook.
Pass (dict "ctx" $ "name" NAME ["jobName" NAME] "hook" EVENTS "args" LIST "volumes" LIST "mounts" LIST). */}}
{{- define "imagegate.hookJob" -}}
{{- $ := .ctx -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .jobName | default .name }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "imagegate.componentLabels" (dict "ctx" $ "component" "hook") | nindent 4 }}
  {{- if .hook }}
  annotations:
    helm.sh/hook: {{ .hook }}
    helm.sh/hook-weight: "0"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
  {{- end }}
spec:
  backoffLimit: 3
  activeDeadlineSeconds: {{ $.Values.hooks.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: 3600
  template:
    metadata:
      labels:
        {{- include "imagegate.selectorLabels" (dict "ctx" $ "component" "hook") | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ .name }}
      automountServiceAccountToken: true
      {{- with $.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.webhook.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.webhook.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $.Values.webhook.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .container }}
          image: {{ include "imagegate.image" $ | quote }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          env:
            - name: IMAGEGATE_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
          resources:
            {{- toYaml $.Values.hooks.resources | nindent 12 }}
          securityContext:
            {{- toYaml $.Values.webhook.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with .mounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 16Mi
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}

{{/* The hook's ServiceAccount and its (Cluster)Role bindings. Pass (dict "ctx" $ "name" NAME
"hook" EVENTS "clusterRules" LIST "rules" LIST); an empty "hook" makes them release objects. */}}
{{- define "imagegate.hookRBAC" -}}
{{- $in := . -}}
{{- $ := .ctx -}}
{{- $meta := dict -}}
{{- if .hook }}
{{- $meta = dict "helm.sh/hook" .hook "helm.sh/hook-weight" "-5" "helm.sh/hook-delete-policy" "before-hook-creation,hook-succeeded" -}}
{{- end }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "imagegate.componentLabels" (dict "ctx" $ "component" "hook") | nindent 4 }}
  {{- with $meta }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- range $scope := list "Cluster" "" }}
{{- $rules := ternary $in.clusterRules $in.rules (eq $scope "Cluster") }}
{{- if $rules }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $scope }}Role
metadata:
  name: {{ $in.name }}
  {{- if not $scope }}
  namespace: {{ $.Release.Namespace }}
  {{- end }}
  labels:
    {{- include "imagegate.componentLabels" (dict "ctx" $ "component" "hook") | nindent 4 }}
  {{- with $meta }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
rules:
  {{- toYaml $rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $scope }}RoleBinding
metadata:
  name: {{ $in.name }}
  {{- if not $scope }}
  namespace: {{ $.Release.Namespace }}
  {{- end }}
  labels:
    {{- include "imagegate.componentLabels" (dict "ctx" $ "component" "hook") | nindent 4 }}
  {{- with $meta }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ $scope }}Role
  name: {{ $in.name }}
subjects:
  - kind: ServiceAccount
    name: {{ $in.name }}
    namespace: {{ $.Release.Namespace }}
{{- end }}
{{- end }}
{{- end -}}
