{{/* Common names and labels. */}}
{{- define "stagecoach.name" -}}stagecoach{{- end -}}

{{- define "stagecoach.fullname" -}}
{{- if contains "stagecoach" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-stagecoach" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stagecoach.labels" -}}
app.kubernetes.io/name: stagecoach
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "stagecoach.selector" -}}
app.kubernetes.io/name: stagecoach
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stagecoach.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Namespaces the operator watches and where stage RBAC is installed. */}}
{{- define "stagecoach.watchNamespaces" -}}
{{- if eq .Values.watch.mode "namespaces" -}}
{{- join "," .Values.watch.namespaces -}}
{{- end -}}
{{- end -}}

{{/* The operator's permissions, shared by the ClusterRole and the per-namespace Roles:
exactly what it calls (kopf only watches; it never writes to our objects). */}}
{{- define "stagecoach.operatorRules" -}}
- apiGroups: [stagecoach.dev]
  resources: [agentpipelines, agentpipelinetemplates, modelproviders]
  verbs: [get, list, watch]
# ttlSecondsAfterFinished: a finished pipeline is deleted with everything it owns.
- apiGroups: [stagecoach.dev]
  resources: [agentpipelines]
  verbs: [delete]
- apiGroups: [stagecoach.dev]
  resources: [agentpipelines/status, modelproviders/status]
  verbs: [patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, delete]
# patch: held only to grant it to the stage Role (the API server refuses to grant what
# the granter lacks); the operator itself never patches a ConfigMap. delete: expired
# stage-cache entries (stagecoach-cache-*), which no pipeline owns.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, create, update, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* What a stage pod's runner may do: read ConfigMaps and update the ones the operator
prepared for its attempt (patch is an update of data; no create or delete). The stage-writes admission
policy (stage-policy.yaml) narrows "update" to that pod's own objects. Keep equal to
stagecoach.operator.policy.STAGE_RULES (a test checks). */}}
{{- define "stagecoach.stageRules" -}}
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, update, patch]
{{- end -}}
