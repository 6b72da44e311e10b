{{/* Names and labels shared by every template. */}}
{{- define "hygen.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hygen.labels" -}}
app.kubernetes.io/name: hygen-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "hygen.selectorLabels" -}}
app.kubernetes.io/name: hygen-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hygen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hygen.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hygen.dispatcherServiceAccountName" -}}
{{- printf "%s-dispatcher" (include "hygen.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hygen.tokenSecret" -}}
{{- default .Values.controlToken.secretName .Values.controlToken.existingSecret -}}
{{- end -}}

{{- define "hygen.image" -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) -}}
{{- end -}}

{{/* Where RBAC applies: one Role per watched namespace, or cluster-wide. */}}
{{- define "hygen.namespaced" -}}
{{- if .Values.watchNamespaces }}true{{ end -}}
{{- end -}}

{{- define "hygen.batchApiClaim" -}}
{{- .Values.operator.batchApiVolume.existingClaim | default (printf "%s-batch-api" (include "hygen.fullname" .)) -}}
{{- end -}}
