{{/*
Names and labels shared by every template.
*/}}

{{- define "segue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release name, prefixed with the chart name unless it already contains it.
*/}}
{{- define "segue.fullname" -}}
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

{{- define "segue.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "segue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "segue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "segue.labels" -}}
helm.sh/chart: {{ include "segue.chart" . }}
{{ include "segue.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: segue
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "segue.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "segue.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "segue.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The namespaces a namespace-scoped operator watches, as a JSON list: watchNamespaces, or the
release namespace when that list is empty; [] with rbac.scope=cluster. Use it with
`include "segue.watchNamespaces" . | fromJsonArray`.
*/}}
{{- define "segue.watchNamespaces" -}}
{{- if eq .Values.rbac.scope "namespace" }}
{{- .Values.watchNamespaces | default (list .Release.Namespace) | toJson }}
{{- else if .Values.watchNamespaces }}
{{- fail "watchNamespaces only applies with rbac.scope=namespace; with rbac.scope=cluster the operator watches every namespace" }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}
