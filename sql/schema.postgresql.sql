-- The schema the PostgreSQL migrations produce: `orchestra-schema schema`.
-- Generated; do not edit. CI checks it with `orchestra-schema schema --check`.

CREATE TABLE "AgentSessions" (
    "Id" character varying(128) NOT NULL,
    "AgentId" character varying(128) NOT NULL,
    "SessionId" character varying(128) NOT NULL,
    "ProcessId" integer,
    "WorkingDirectory" character varying(500) NOT NULL,
    "Status" integer NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "LastResumedAt" timestamp with time zone,
    "ClosedAt" timestamp with time zone,
    "TotalCostUsd" double precision NOT NULL,
    "TotalDurationMs" bigint NOT NULL,
    "MessageCount" integer NOT NULL,
    CONSTRAINT "FK_AgentSessions_Agents_AgentId" FOREIGN KEY ("AgentId") REFERENCES "Agents"("Id") ON DELETE CASCADE,
    CONSTRAINT "PK_AgentSessions" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_AgentSessions_AgentId" ON public."AgentSessions" USING btree ("AgentId");

CREATE INDEX "IX_AgentSessions_AgentId_Status" ON public."AgentSessions" USING btree ("AgentId", "Status");

CREATE UNIQUE INDEX "IX_AgentSessions_SessionId" ON public."AgentSessions" USING btree ("SessionId");

CREATE TABLE "Agents" (
    "Id" character varying(128) NOT NULL,
    "Name" character varying(255) NOT NULL,
    "Type" character varying(100) NOT NULL,
    "RepositoryPath" character varying(500) NOT NULL,
    "Status" integer NOT NULL,
    "LastPing" timestamp with time zone NOT NULL,
    "CurrentTask" character varying(128),
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "IsDeleted" boolean NOT NULL,
    "ConfigurationJson" text,
    "MaxConcurrentTasks" integer NOT NULL,
    "HealthCheckInterval" bigint NOT NULL,
    "TotalTasksCompleted" integer NOT NULL,
    "TotalTasksFailed" integer NOT NULL,
    "TotalExecutionTime" bigint NOT NULL,
    "AverageExecutionTime" double precision NOT NULL,
    "SessionId" character varying(128),
    "RepositoryId" character varying(128),
    CONSTRAINT "FK_Agents_Repositories_RepositoryId" FOREIGN KEY ("RepositoryId") REFERENCES "Repositories"("Id") ON DELETE SET NULL,
    CONSTRAINT "PK_Agents" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_Agents_RepositoryId" ON public."Agents" USING btree ("RepositoryId");

CREATE INDEX "IX_Agents_RepositoryPath" ON public."Agents" USING btree ("RepositoryPath");

CREATE INDEX "IX_Agents_SessionId" ON public."Agents" USING btree ("SessionId");

CREATE INDEX "IX_Agents_Status" ON public."Agents" USING btree ("Status");

CREATE INDEX "IX_Agents_Status_RepositoryPath" ON public."Agents" USING btree ("Status", "RepositoryPath");

CREATE TABLE "ChatMessages" (
    "Id" uuid NOT NULL,
    "SessionId" uuid NOT NULL,
    "Author" character varying(255) NOT NULL,
    "Content" character varying(4000) NOT NULL,
    "MessageType" integer NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "Metadata" character varying(2000),
    CONSTRAINT "FK_ChatMessages_ChatSessions_SessionId" FOREIGN KEY ("SessionId") REFERENCES "ChatSessions"("Id") ON DELETE CASCADE,
    CONSTRAINT "PK_ChatMessages" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_ChatMessages_CreatedAt" ON public."ChatMessages" USING btree ("CreatedAt");

CREATE INDEX "IX_ChatMessages_SessionId" ON public."ChatMessages" USING btree ("SessionId");

CREATE INDEX "IX_ChatMessages_SessionId_CreatedAt" ON public."ChatMessages" USING btree ("SessionId", "CreatedAt");

CREATE TABLE "ChatSessions" (
    "Id" uuid NOT NULL,
    "UserId" character varying(128),
    "InstanceId" character varying(128) NOT NULL,
    "Title" character varying(200) NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "LastMessageAt" timestamp with time zone NOT NULL,
    CONSTRAINT "PK_ChatSessions" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_ChatSessions_CreatedAt" ON public."ChatSessions" USING btree ("CreatedAt");

CREATE INDEX "IX_ChatSessions_LastMessageAt" ON public."ChatSessions" USING btree ("LastMessageAt");

CREATE INDEX "IX_ChatSessions_UserId" ON public."ChatSessions" USING btree ("UserId");

CREATE INDEX "IX_ChatSessions_UserId_InstanceId" ON public."ChatSessions" USING btree ("UserId", "InstanceId");

CREATE TABLE "OrchestrationLogs" (
    "Id" character varying(128) NOT NULL,
    "EventType" character varying(100) NOT NULL,
    "Message" text NOT NULL,
    "Level" integer NOT NULL,
    "AgentId" character varying(128),
    "TaskId" character varying(128),
    "RepositoryId" character varying(128),
    "AdditionalData" text,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    CONSTRAINT "FK_OrchestrationLogs_Agents_AgentId" FOREIGN KEY ("AgentId") REFERENCES "Agents"("Id") ON DELETE SET NULL,
    CONSTRAINT "FK_OrchestrationLogs_Repositories_RepositoryId" FOREIGN KEY ("RepositoryId") REFERENCES "Repositories"("Id") ON DELETE SET NULL,
    CONSTRAINT "FK_OrchestrationLogs_Tasks_TaskId" FOREIGN KEY ("TaskId") REFERENCES "Tasks"("Id") ON DELETE SET NULL,
    CONSTRAINT "PK_OrchestrationLogs" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_OrchestrationLogs_AgentId_CreatedAt" ON public."OrchestrationLogs" USING btree ("AgentId", "CreatedAt");

CREATE INDEX "IX_OrchestrationLogs_CreatedAt" ON public."OrchestrationLogs" USING btree ("CreatedAt");

CREATE INDEX "IX_OrchestrationLogs_EventType" ON public."OrchestrationLogs" USING btree ("EventType");

CREATE INDEX "IX_OrchestrationLogs_Level" ON public."OrchestrationLogs" USING btree ("Level");

CREATE INDEX "IX_OrchestrationLogs_RepositoryId" ON public."OrchestrationLogs" USING btree ("RepositoryId");

CREATE INDEX "IX_OrchestrationLogs_TaskId_CreatedAt" ON public."OrchestrationLogs" USING btree ("TaskId", "CreatedAt");

CREATE TABLE "PerformanceMetrics" (
    "Id" character varying(128) NOT NULL,
    "AgentId" character varying(128) NOT NULL,
    "MetricName" character varying(100) NOT NULL,
    "Value" double precision NOT NULL,
    "Unit" character varying(50),
    "MeasuredAt" timestamp with time zone NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "Description" character varying(500),
    CONSTRAINT "FK_PerformanceMetrics_Agents_AgentId" FOREIGN KEY ("AgentId") REFERENCES "Agents"("Id") ON DELETE CASCADE,
    CONSTRAINT "PK_PerformanceMetrics" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_PerformanceMetrics_AgentId" ON public."PerformanceMetrics" USING btree ("AgentId");

CREATE INDEX "IX_PerformanceMetrics_AgentId_MetricName_MeasuredAt" ON public."PerformanceMetrics" USING btree ("AgentId", "MetricName", "MeasuredAt");

CREATE INDEX "IX_PerformanceMetrics_MeasuredAt" ON public."PerformanceMetrics" USING btree ("MeasuredAt");

CREATE INDEX "IX_PerformanceMetrics_MetricName" ON public."PerformanceMetrics" USING btree ("MetricName");

CREATE TABLE "Repositories" (
    "Id" character varying(128) NOT NULL,
    "Name" character varying(255) NOT NULL,
    "Path" character varying(500) NOT NULL,
    "Description" character varying(1000),
    "Type" integer NOT NULL,
    "IsActive" boolean NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "LastAccessedAt" timestamp with time zone,
    "SettingsJson" text,
    "DefaultBranch" character varying(100),
    "AllowedOperationsJson" text NOT NULL,
    "TotalTasks" integer NOT NULL,
    "SuccessfulTasks" integer NOT NULL,
    "FailedTasks" integer NOT NULL,
    "TotalExecutionTime" bigint NOT NULL,
    "AllowedOperations" text[] NOT NULL,
    CONSTRAINT "PK_Repositories" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_Repositories_IsActive" ON public."Repositories" USING btree ("IsActive");

CREATE UNIQUE INDEX "IX_Repositories_Path" ON public."Repositories" USING btree ("Path");

CREATE INDEX "IX_Repositories_Type" ON public."Repositories" USING btree ("Type");

CREATE TABLE "TaskTemplates" (
    "Id" character varying(128) NOT NULL,
    "Name" character varying(255) NOT NULL,
    "Description" character varying(1000),
    "CommandTemplate" character varying(2000) NOT NULL,
    "DefaultPriority" integer NOT NULL,
    "Category" character varying(100),
    "IsActive" boolean NOT NULL,
    "ParametersJson" text,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    CONSTRAINT "PK_TaskTemplates" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_TaskTemplates_Category" ON public."TaskTemplates" USING btree ("Category");

CREATE INDEX "IX_TaskTemplates_IsActive" ON public."TaskTemplates" USING btree ("IsActive");

CREATE INDEX "IX_TaskTemplates_Name" ON public."TaskTemplates" USING btree ("Name");

CREATE TABLE "Tasks" (
    "Id" character varying(128) NOT NULL,
    "Command" character varying(2000) NOT NULL,
    "AgentId" character varying(128),
    "RepositoryPath" character varying(500) NOT NULL,
    "Priority" integer NOT NULL,
    "Status" integer NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "StartedAt" timestamp with time zone,
    "CompletedAt" timestamp with time zone,
    "ExecutionDuration" bigint,
    "Result" text,
    "ErrorMessage" text,
    "RetryCount" integer NOT NULL,
    "CorrelationId" character varying(128),
    "WorkflowId" character varying(128),
    "ParentTaskId" character varying(128),
    "WorkflowStep" integer NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "RepositoryId" character varying(128),
    CONSTRAINT "FK_Tasks_Agents_AgentId" FOREIGN KEY ("AgentId") REFERENCES "Agents"("Id") ON DELETE SET NULL,
    CONSTRAINT "FK_Tasks_Repositories_RepositoryId" FOREIGN KEY ("RepositoryId") REFERENCES "Repositories"("Id") ON DELETE SET NULL,
    CONSTRAINT "FK_Tasks_Tasks_ParentTaskId" FOREIGN KEY ("ParentTaskId") REFERENCES "Tasks"("Id") ON DELETE RESTRICT,
    CONSTRAINT "FK_Tasks_WorkflowDefinitions_WorkflowId" FOREIGN KEY ("WorkflowId") REFERENCES "WorkflowDefinitions"("Id") ON DELETE SET NULL,
    CONSTRAINT "PK_Tasks" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_Tasks_AgentId" ON public."Tasks" USING btree ("AgentId");

CREATE INDEX "IX_Tasks_AgentId_Status" ON public."Tasks" USING btree ("AgentId", "Status");

CREATE INDEX "IX_Tasks_CorrelationId" ON public."Tasks" USING btree ("CorrelationId");

CREATE INDEX "IX_Tasks_CreatedAt" ON public."Tasks" USING btree ("CreatedAt");

CREATE INDEX "IX_Tasks_ParentTaskId" ON public."Tasks" USING btree ("ParentTaskId");

CREATE INDEX "IX_Tasks_RepositoryId" ON public."Tasks" USING btree ("RepositoryId");

CREATE INDEX "IX_Tasks_Status" ON public."Tasks" USING btree ("Status");

CREATE INDEX "IX_Tasks_Status_Priority" ON public."Tasks" USING btree ("Status", "Priority");

CREATE INDEX "IX_Tasks_WorkflowId" ON public."Tasks" USING btree ("WorkflowId");

CREATE TABLE "UserPreferences" (
    "Id" character varying(128) NOT NULL,
    "UserId" character varying(128) NOT NULL,
    "Key" character varying(255) NOT NULL,
    "Value" text NOT NULL,
    "Type" integer NOT NULL,
    "Category" character varying(100),
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "RepositoryId" character varying(128),
    CONSTRAINT "FK_UserPreferences_Repositories_RepositoryId" FOREIGN KEY ("RepositoryId") REFERENCES "Repositories"("Id") ON DELETE CASCADE,
    CONSTRAINT "PK_UserPreferences" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_UserPreferences_Category" ON public."UserPreferences" USING btree ("Category");

CREATE INDEX "IX_UserPreferences_RepositoryId" ON public."UserPreferences" USING btree ("RepositoryId");

CREATE UNIQUE INDEX "IX_UserPreferences_UserId_Key_RepositoryId" ON public."UserPreferences" USING btree ("UserId", "Key", "RepositoryId");

CREATE INDEX "IX_UserPreferences_UserId_Type" ON public."UserPreferences" USING btree ("UserId", "Type");

CREATE TABLE "WorkflowDefinitions" (
    "Id" character varying(128) NOT NULL,
    "Name" character varying(255) NOT NULL,
    "Description" character varying(1000),
    "DefinitionJson" text NOT NULL,
    "IsActive" boolean NOT NULL,
    "Version" integer NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    CONSTRAINT "PK_WorkflowDefinitions" PRIMARY KEY ("Id")
);

CREATE INDEX "IX_WorkflowDefinitions_IsActive" ON public."WorkflowDefinitions" USING btree ("IsActive");

CREATE INDEX "IX_WorkflowDefinitions_Name" ON public."WorkflowDefinitions" USING btree ("Name");

CREATE INDEX "IX_WorkflowDefinitions_Name_Version" ON public."WorkflowDefinitions" USING btree ("Name", "Version");
