variable "resource_group_name" {
  description = "Resource group of the existing Log Analytics workspace; the new resources go there too."
  type        = string
}

variable "workspace_name" {
  description = "The existing Log Analytics workspace that Microsoft Sentinel uses."
  type        = string
}

variable "onboard_sentinel" {
  description = "Set to true only if Microsoft Sentinel is not yet enabled on the workspace."
  type        = bool
  default     = false
}

variable "location" {
  description = "Region of the new resources; empty means the resource group's region."
  type        = string
  default     = ""
}

variable "name_prefix" {
  description = "Prefix of every resource name (3 to 11 lowercase letters and digits)."
  type        = string
  default     = "mdetelhunt"
}

variable "image" {
  description = "The job image, e.g. myregistry.azurecr.io/telemetry-hunt:0.1.0."
  type        = string
}

variable "registry_server" {
  description = "Registry server the image is pulled from with the job identity (grant it AcrPull); empty for a public image."
  type        = string
  default     = ""
}

variable "cron_expression" {
  description = "When the job runs: 5-field cron, evaluated in UTC (nightly at 02:30 by default)."
  type        = string
  default     = "30 2 * * *"
}

variable "replica_timeout_seconds" {
  description = "A run that takes longer is stopped and counts as failed."
  type        = number
  default     = 7200
}

variable "replica_retry_limit" {
  description = "How often a failed run is retried within one schedule slot (0 = never)."
  type        = number
  default     = 1
}

variable "cpu" {
  description = "vCPUs of the job container (consumption plan: 0.25 to 4)."
  type        = number
  default     = 2
}

variable "memory" {
  description = "Memory of the job container; the consumption plan pairs 2 GiB per vCPU."
  type        = string
  default     = "4Gi"
}

variable "results_container_name" {
  description = "Blob container of the result tables, created in the new storage account."
  type        = string
  default     = "telemetry-hunt"
}

variable "source_storage_account_name" {
  description = "Storage account (in the resource group) holding exported DeviceNetworkEvents to read; empty when the source is the workspace."
  type        = string
  default     = ""
}

variable "source_container_name" {
  description = "Blob container of the exported DeviceNetworkEvents in source_storage_account_name."
  type        = string
  default     = ""
}

variable "config_toml" {
  description = "Contents of telemetry-hunt.toml to mount at /config (optional; see `telemetry-hunt config`). It holds no secrets."
  type        = string
  default     = ""
}

variable "table_retention_days" {
  description = "Days the Sentinel custom tables keep rows interactively (null: the workspace default)."
  type        = number
  default     = null
}

variable "rule_enabled" {
  description = "Whether the analytics rule on the findings table is enabled."
  type        = bool
  default     = true
}
