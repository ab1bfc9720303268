"""The OpenAPI 3.1 document of every `/api` route (contract-core §3-§7, contract-work §2-§4), as plain data.

`build()` returns a fresh dict; nothing here touches the network or the database. Response schemas follow what the
old backend emitted (`examples.json` is the reference): ids and counts are integers, DATETIME/DATE values are ISO
strings, DECIMALs are strings, flags are the integers 0/1, and a field is nullable wherever its column or join can
be NULL (`schema.sql`). Objects stay open (`additionalProperties` is never set) so that added fields are not a
schema break. Request schemas describe the documented fields and the types clients send; the server answers a
400 `{"error": ...}` to anything else.

Every operation documents, besides its own statuses: 400 (malformed or invalid input), 401/403 per its guard,
413 (body over the limit), 500 and 503 (database unavailable); the two login routes also document 429.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
ERROR_REF = "#/components/schemas/Error"

# --- schema helpers ---------------------------------------------------------------------------------------------

INT: Schema = {"type": "integer"}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
ANY: Schema = {}
DATETIME: Schema = {"type": "string", "format": "date-time", "description": "ISO-8601 UTC with milliseconds"}
DECIMAL: Schema = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "a DECIMAL, as a string"}
FLAG: Schema = {"type": "integer", "enum": [0, 1]}
TRUE: Schema = {"type": "boolean", "const": True}
DAY: Schema = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "examples": ["2026-02-02"]}
HHMM: Schema = {"type": "string", "pattern": r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$", "examples": ["09:30"]}
UUID: Schema = {"type": "string", "minLength": 1, "maxLength": 36, "pattern": r"\S"}
ID_IN: Schema = {"type": "integer", "minimum": 1, "maximum": 2147483647}
# Input flags: `toFlag` semantics (1 for true, 1, "1", "true"; anything else 0).
FLAG_IN: Schema = {
    "anyOf": [BOOL, {"type": "integer", "enum": [0, 1]}, {"type": "string", "enum": ["0", "1", "true", "false"]}]
}
# A number a client may send as a JSON number or a numeric string (the web client sends ids from <select>s).
NUMERIC_IN: Schema = {"anyOf": [ID_IN, {"type": "string", "pattern": r"^[1-9][0-9]{0,8}$"}]}
# An instant: an ISO-8601 string or epoch milliseconds.
INSTANT_IN: Schema = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "minimum": 0}]}
VALUE_TYPES = [
    "int",
    "integer",
    "decimal",
    "varchar",
    "text",
    "bool",
    "boolean",
    "date",
    "datetime",
    "customer_id",
    "json",
]


def null(schema: Schema) -> Schema:
    """The same schema, also allowing `null`."""
    if "type" in schema and isinstance(schema["type"], str):
        out = dict(schema)
        out["type"] = [schema["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "const" in out:
            out["enum"] = [out.pop("const"), None]
        return out
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    """An object; every listed property is required unless `required` names the required ones."""
    schema: Schema = {"type": "object", "properties": properties}
    req = list(properties) if required is None else required
    if req:
        schema["required"] = req
    schema.update(extra)
    return schema


def arr(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def text_in(max_length: int) -> Schema:
    """A required text field: something other than white space, at most the column's length."""
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": r"\S"}


SUCCESS = obj({"success": TRUE})
ID_ONLY = obj({"id": INT})
TOKEN_FIELDS: dict[str, Schema] = {
    "accessToken": null({**STR, "description": "HS256 JWT; null only when no JWT secret is configured (local)"}),
    "tokenType": null({"type": "string", "const": "Bearer"}),
    "expiresIn": null({**STR, "description": "the configured JWT_EXPIRES_IN text, e.g. `8h`"}),
}

# --- responses --------------------------------------------------------------------------------------------------


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def ok(schema: Schema, description: str = "Success") -> dict[str, Any]:
    return {"description": description, "content": json_content(schema)}


def error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": json_content({"$ref": ERROR_REF})}
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}
GENERIC_400 = (
    "Malformed or invalid input: invalid JSON, a body that is not an object, a wrong type, a repeated query parameter"
)
STAFF_403 = "The token's role is not admin or employee: `Forbidden`"
ADMIN_403 = "The token's role is not admin: `Forbidden`"

# Where an operation's guard sits: None (public), "auth" (any valid token), "staff" (roles 1, 2), "admin" (role 1).
Guard = str | None


def responses(
    success: dict[str, dict[str, Any]], guard: Guard, errors: dict[str, str], login: bool = False
) -> dict[str, Any]:
    """The success responses, the operation's documented errors, and the errors every route can give."""
    out: dict[str, Any] = dict(success)
    documented = dict(errors)
    messages_400 = documented.pop("400", None)
    out["400"] = error(f"{messages_400}. Also: {GENERIC_400}" if messages_400 else GENERIC_400)
    if guard is not None:
        out["401"] = error(
            "No valid token: `Missing bearer token`, `Invalid token` or `Invalid or expired token` "
            "(also a deactivated user's token)"
        )
        if guard in ("staff", "admin"):
            out["403"] = error(documented.pop("403", "") or (ADMIN_403 if guard == "admin" else STAFF_403))
    for status, description in documented.items():
        out[status] = error(description)
    out["413"] = error("The request body is over the size limit: `Request body too large`")
    if login:
        out["429"] = error("Too many attempts for this account or client address: `Too many requests`", RETRY_AFTER)
    elif guard is not None:
        out["429"] = error(
            "This user already has DB_USER_CONNECTIONS requests using the database and DB_USER_QUEUE waiting, or "
            "waited DB_ACQUIRE_TIMEOUT_MS: `Too many concurrent requests, please retry later`",
            RETRY_AFTER,
        )
    out["500"] = error("Unexpected failure: `Internal server error`")
    out["503"] = error("The database is unavailable, or the service is overloaded: `Service unavailable`", RETRY_AFTER)
    return dict(sorted(out.items()))


def query(name: str, schema: Schema, required: bool = False, description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        param["description"] = description
    return param


def path_id(description: str) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": INT, "description": description}


def body(schema: Schema, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema)}


def op(
    operation_id: str,
    summary: str,
    tag: str,
    guard: Guard,
    success: dict[str, dict[str, Any]],
    errors: dict[str, str] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    request: Schema | None = None,
    login: bool = False,
    description: str = "",
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if request is not None:
        operation["requestBody"] = body(request)
    if guard is None:
        operation["security"] = []
    operation["responses"] = responses(success, guard, errors or {}, login)
    return operation


# --- shared shapes ----------------------------------------------------------------------------------------------

USER_OUT = obj(
    {
        "id": INT,
        "first_name": STR,
        "last_name": STR,
        "email": null(STR),
        "login": STR,
        "system_role": INT,
        "is_active": FLAG,
        "is_ccs": FLAG,
    }
)
USER_FIELDS_IN: dict[str, Schema] = {
    "first_name": text_in(100),
    "last_name": text_in(100),
    "email": text_in(255),
    "login": text_in(100),
    "password": {"type": "string", "maxLength": 1024},
    "authcode": text_in(32),
    "system_role": {"anyOf": [{"type": "integer", "enum": [1, 2, 3]}, {"type": "string", "enum": ["1", "2", "3"]}]},
    "is_active": FLAG_IN,
    "is_ccs": FLAG_IN,
}
USER_REQUIRED = ["first_name", "last_name", "email", "login", "authcode", "system_role"]

CUSTOMER_OUT = obj(
    {
        "id": INT,
        "name": STR,
        "state": null(STR),
        "county": null(STR),
        "contact_name": null(STR),
        "contact_email": null(STR),
        "contact_phone": null(STR),
    }
)
CUSTOMER_IN = obj(
    {
        "name": text_in(255),
        "state": text_in(64),
        "county": text_in(128),
        "contact_name": text_in(255),
        "contact_email": text_in(255),
        "contact_phone": text_in(64),
    }
)

DEFINITION_OUT = obj({"id": INT, "key": STR, "label": STR, "valueType": STR})
ID_NAME = obj({"id": INT, "name": STR})
ID_LABEL = obj({"id": INT, "label": STR})

VALUE_COLUMNS: dict[str, Schema] = {
    "value_int": null(INT),
    "value_decimal": null(DECIMAL),
    "value_varchar": null(STR),
    "value_text": null(STR),
    "value_bool": null(FLAG),
    "value_date": null(DATETIME),
    "value_datetime": null(DATETIME),
    "value_customer_id": null(INT),
    "value_json": null(STR),
}
TRACKING_VALUE_COLUMNS = {k: v for k, v in VALUE_COLUMNS.items() if k != "value_customer_id"}

PROJECT_IN_FIELDS: dict[str, Schema] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 255},
    "type_code": null({"type": "string", "maxLength": 16}),
    "item_id": null(ID_IN),
    "unit_id": null(ID_IN),
    "project_status_id": null(ID_IN),
    "customer_id": null(ID_IN),
    "is_jira": null(FLAG_IN),
    "isJira": null(FLAG_IN),
}
TASK_DATA_IN = obj(
    {
        "dataDefId": ID_IN,
        "valueType": null({"type": "string", "enum": VALUE_TYPES}),
        "value": ANY,
        "isRequired": null(FLAG_IN),
    },
    required=["dataDefId"],
)
PROJECT_CONFIG_IN = obj(
    {
        "project": obj(PROJECT_IN_FIELDS, required=["name"]),
        "team": arr(obj({"userId": ID_IN, "roleId": ID_IN})),
        "tasks": arr(
            obj(
                {
                    "taskId": null(ID_IN),
                    "taskTitle": null({"type": "string", "maxLength": 255}),
                    "taskTempId": null({"type": "string", "maxLength": 64}),
                    "categoryId": null(ID_IN),
                    "rolesId": arr(ID_IN),
                    "taskData": arr(TASK_DATA_IN),
                },
                required=[],
            )
        ),
        "itemTracking": arr(
            obj(
                {
                    "statusText": {"type": "string", "maxLength": 100},
                    "statusMoment": {"type": "string", "enum": ["task_started", "task_finished"]},
                    "taskRefs": arr(
                        {
                            "anyOf": [
                                obj({"taskId": ID_IN}),
                                obj({"taskTempId": {"type": "string", "maxLength": 64}}),
                            ]
                        }
                    ),
                },
                required=["statusText", "statusMoment", "taskRefs"],
            )
        ),
    },
    required=["project"],
)

SEGMENT_OUT = obj(
    {
        "id": INT,
        "activity_id": INT,
        "project_id": null(INT),
        "task_id": null(INT),
        "item_id": null(INT),
        "date": DATETIME,
        "start_time": DATETIME,
        "end_time": null(DATETIME),
        "duration": null(INT),
        "note": null(STR),
        "activity_name": null(STR),
        "activity_description": null(STR),
        "task_name": null(STR),
        "task_type": null(STR),
        "project_name": null(STR),
        "item_name": null(STR),
        "pages": null(INT),
        "pagesPerMinute": null(DECIMAL),
    }
)
METRIC_OUT = obj(
    {
        "id": INT,
        "project_id": null(INT),
        "task_id": null(INT),
        "date": DATETIME,
        "start_time": DATETIME,
        "end_time": null(DATETIME),
        "duration": null({**DECIMAL, "description": "effective minutes, a DECIMAL string as the old backend sent it"}),
        "task_name": null(STR),
        "project_name": null(STR),
        "pages": null(INT),
        "pagesPerMinute": null(DECIMAL),
    }
)
RANGE_PARAMS = [
    query("userId", ID_IN, description="whose rows (admins only; others always get their own)"),
    query("date", DAY, description="one day; takes precedence over dateFrom/dateTo"),
    query("dateFrom", DAY, description="inclusive range start (with dateTo)"),
    query("dateTo", DAY, description="inclusive range end (with dateFrom)"),
]
RANGE_400 = "`userId and either date or dateFrom/dateTo are required`"
ENTRY_ID = path_id("the time-tracking entry id")

BOOTSTRAP_OUT = obj(
    {
        "users": arr(
            obj(
                {
                    "id": INT,
                    "first_name": STR,
                    "last_name": STR,
                    "login": STR,
                    "system_role": INT,
                    "is_active": FLAG,
                }
            )
        ),
        "projects": arr(
            obj(
                {
                    "id": INT,
                    "code": null(STR),
                    "name": STR,
                    "type_id": null(INT),
                    "type_code": null(STR),
                    "item_id": null(INT),
                    "unit_id": null(INT),
                    "project_status_id": INT,
                    "customer_id": null(INT),
                    "is_jira": FLAG,
                    "is_active": null(FLAG),
                    "created_at": DATETIME,
                },
                required=["id", "name"],
            )
        ),
        "projectUsers": arr(obj({"id": INT, "project_id": INT, "user_id": INT, "project_role_id": INT})),
        "projectRoles": arr(obj({"id": INT, "name": STR, "label": STR}, required=["id"])),
        "tasks": arr(
            obj(
                {
                    "id": INT,
                    "name": null(STR),
                    "description": STR,
                    "category_id": null(INT),
                    "default_role_id": null(INT),
                    "in_progress_status_id": null(INT),
                    "completed_status_id": null(INT),
                },
                required=["id"],
            )
        ),
        "customers": arr(ID_NAME),
        "itemTypes": arr(ID_NAME),
        "projectTasks": arr(
            obj(
                {
                    "id": INT,
                    "project_id": INT,
                    "task_id": INT,
                    "order_number": null(INT),
                    "only_after_number": null(INT),
                    "is_mandatory": FLAG,
                    "override_role_id": null(INT),
                },
                required=["id", "project_id", "task_id"],
            )
        ),
        "projectTaskRoles": arr(obj({"id": INT, "project_id": INT, "task_id": INT, "role_id": INT})),
        "taskDataDefinitions": arr(obj({"id": INT, "key": STR, "label": STR, "value_type": STR})),
        "projectTaskData": arr(
            obj(
                {
                    "id": INT,
                    "project_task_id": INT,
                    "data_def_id": INT,
                    "is_required": FLAG,
                    **VALUE_COLUMNS,
                    "created_at": DATETIME,
                    "updated_at": null(DATETIME),
                },
                required=["id", "project_task_id", "data_def_id"],
            )
        ),
        "refItemStatus": arr(obj({"id": INT, "name": STR, "label": STR})),
        "cfsItems": arr(obj({"id": INT, "project_id": INT, "label": STR, "task_status_id": null(INT)})),
        "imItems": arr(obj({"id": INT, "project_id": INT, "label": STR, "task_status_id": null(INT)})),
    }
)

AUTHCODE_LOGIN_OUT: Schema = {
    "type": ["object", "null"],
    "description": "`null` when no active user has this code",
    "properties": {
        "id": INT,
        "first_name": STR,
        "last_name": STR,
        "login": STR,
        "system_role": INT,
        **TOKEN_FIELDS,
    },
    "required": ["id", "first_name", "last_name", "login", "system_role", *TOKEN_FIELDS],
}

USER_ID_IN = null(NUMERIC_IN)


# --- the operations -----------------------------------------------------------------------------------------------


def paths() -> dict[str, dict[str, Any]]:
    """One flat table of operations, in the contract's order."""
    p: dict[str, dict[str, Any]] = {}

    # -- ops (served by every service) --
    p["/health"] = {
        "get": {
            "operationId": "health",
            "summary": "Liveness: the process is up",
            "tags": ["ops"],
            "security": [],
            "responses": {
                "200": ok(
                    obj(
                        {
                            "status": {"type": "string", "const": "ok"},
                            "service": STR,
                            "startedAt": DATETIME,
                            "uptimeSec": INT,
                            "shuttingDown": BOOL,
                        }
                    )
                )
            },
        }
    }
    not_ready = obj({"status": {"type": "string", "const": "not-ready"}, "reason": STR})
    p["/ready"] = {
        "get": {
            "operationId": "ready",
            "summary": "Readiness: dependencies reachable and not shutting down",
            "tags": ["ops"],
            "security": [],
            "responses": {
                "200": ok(obj({"status": {"type": "string", "const": "ready"}})),
                "503": ok(
                    not_ready,
                    "Not ready: `shutting-down`, `<check>-unreachable`, or why MySQL refuses the service: "
                    "`db-access-denied`, `db-unknown-database`, `db-too-many-connections`",
                ),
            },
        }
    }
    p["/api/openapi.json"] = {
        "get": {
            "operationId": "openapiDocument",
            "summary": "This OpenAPI document",
            "tags": ["ops"],
            "security": [],
            "responses": {"200": ok({"type": "object"}, "The OpenAPI 3.1 document")},
        }
    }

    # -- A1 login (auth service) --
    p["/api/login"] = {
        "post": op(
            "login",
            "Web login with login name and password",
            "auth",
            None,
            {
                "200": ok(
                    obj(
                        {"id": INT, "first_name": STR, "last_name": STR, "role": INT, **TOKEN_FIELDS},
                        required=["id", *TOKEN_FIELDS],
                        description="`first_name`, `last_name` and `role` are left out when the column is NULL",
                    )
                )
            },
            {
                "400": "`Username and password are required`",
                "401": "Unknown login, wrong password or inactive user: `Invalid username or password`",
            },
            request=obj(
                {
                    "username": {"type": "string", "minLength": 1, "maxLength": 100},
                    "password": {"type": "string", "minLength": 1},
                }
            ),
            login=True,
        )
    }

    # -- U1-U5 users (admin) --
    p["/api/users"] = {
        "get": op(
            "listUsers",
            "Every user, ordered by id",
            "users",
            "admin",
            {
                "200": ok(
                    arr(
                        obj(
                            {
                                "id": INT,
                                "first_name": null(STR),
                                "last_name": null(STR),
                                "email": null(STR),
                                "login": null(STR),
                                "authcode": null(STR),
                                "system_role": null(INT),
                                "is_active": FLAG,
                                "is_ccs": FLAG,
                            }
                        )
                    )
                )
            },
        ),
        "post": op(
            "createUser",
            "Create a user",
            "users",
            "admin",
            {"201": ok(USER_OUT, "Created")},
            {
                "400": "`All fields are required`, `system_role must be a number`, `Unknown system_role`, "
                "`A field value is too long or out of range`",
                "409": "`User with same login/email/authcode exists`",
            },
            request=obj(USER_FIELDS_IN, required=[*USER_REQUIRED, "password"]),
        ),
    }
    p["/api/users/roles"] = {
        "get": op(
            "listSystemRoles",
            "The system roles (1 admin, 2 employee, 3 customer)",
            "users",
            "admin",
            {"200": ok(arr(obj({"id": INT, "name": STR, "label": null(STR)})))},
        )
    }
    p["/api/users/{id}"] = {
        "put": op(
            "updateUser",
            "Update a user (an empty or missing password is left unchanged, as are omitted flags)",
            "users",
            "admin",
            {"200": ok(USER_OUT)},
            {
                "400": "`Invalid user id`, `All fields are required`, `system_role must be a number`, "
                "`Unknown system_role`, `A field value is too long or out of range`",
                "404": "`User not found`",
                "409": "`User with same login/email/authcode exists`",
            },
            parameters=[path_id("the user id")],
            request=obj(USER_FIELDS_IN, required=USER_REQUIRED),
        ),
        "delete": op(
            "deleteUser",
            "Delete a user",
            "users",
            "admin",
            {"200": ok(SUCCESS)},
            {"400": "`Invalid user id`", "404": "`User not found`", "409": "`User is referenced by other records`"},
            parameters=[path_id("the user id")],
        ),
    }

    # -- C1-C4 customers (staff) --
    p["/api/customers"] = {
        "get": op(
            "listCustomers", "Every customer, ordered by id", "customers", "staff", {"200": ok(arr(CUSTOMER_OUT))}
        ),
        "post": op(
            "createCustomer",
            "Create a customer",
            "customers",
            "staff",
            {"201": ok(CUSTOMER_OUT, "Created")},
            {"400": "`All fields are required`, `A field value is too long or out of range`"},
            request=CUSTOMER_IN,
        ),
    }
    p["/api/customers/{id}"] = {
        "put": op(
            "updateCustomer",
            "Update a customer",
            "customers",
            "staff",
            {"200": ok(CUSTOMER_OUT)},
            {
                "400": "`Invalid customer id`, `All fields are required`, `A field value is too long or out of range`",
                "404": "`Customer not found`",
            },
            parameters=[path_id("the customer id")],
            request=CUSTOMER_IN,
        ),
        "delete": op(
            "deleteCustomer",
            "Delete a customer",
            "customers",
            "staff",
            {"200": ok(SUCCESS)},
            {
                "400": "`Invalid customer id`",
                "404": "`Customer not found`",
                "409": "`Customer is referenced by projects`",
            },
            parameters=[path_id("the customer id")],
        ),
    }

    # -- L1-L5 lookups (any authenticated user) --
    p["/api/lookups/project-form"] = {
        "get": op(
            "projectFormLookups",
            "Every reference list the project form needs",
            "lookups",
            "auth",
            {
                "200": ok(
                    obj(
                        {
                            "projectTypes": arr(obj({"id": INT, "code": STR, "label": STR})),
                            "statuses": arr(ID_LABEL),
                            "customers": arr(ID_NAME),
                            "items": arr(ID_NAME),
                            "units": arr(ID_NAME),
                            "users": arr(obj({"id": INT, "fullName": null(STR)})),
                            "roles": arr(ID_LABEL),
                            "tasks": arr(
                                obj(
                                    {
                                        "id": INT,
                                        "description": STR,
                                        "categoryId": null(INT),
                                        "categoryName": null(STR),
                                    }
                                )
                            ),
                            "taskCategories": arr(ID_NAME),
                            "itemStatuses": arr(obj({"id": INT, "label": STR, "name": STR})),
                            "taskDataDefinitions": arr(DEFINITION_OUT),
                        }
                    )
                )
            },
        )
    }
    p["/api/lookups/task-data-definitions"] = {
        "get": op(
            "listTaskDataDefinitions",
            "Task data definitions, ordered by label",
            "lookups",
            "auth",
            {"200": ok(arr(DEFINITION_OUT))},
        ),
        "post": op(
            "createTaskDataDefinition",
            "Create a task data definition (200 with the existing row when the key or label exists)",
            "lookups",
            "auth",
            {"200": ok(DEFINITION_OUT, "Already existed"), "201": ok(DEFINITION_OUT, "Created")},
            {"400": "`label is required`, `A field value is too long or out of range`"},
            request=obj(
                {
                    "label": text_in(255),
                    "key": {"type": "string", "maxLength": 100},
                    "valueType": null({"type": "string", "maxLength": 20}),
                    "value_type": null({"type": "string", "maxLength": 20}),
                },
                required=["label"],
            ),
        ),
    }
    p["/api/lookups/task-categories"] = {
        "get": op(
            "listTaskCategories", "Task categories, ordered by name", "lookups", "auth", {"200": ok(arr(ID_NAME))}
        )
    }
    p["/api/lookups/item-categories"] = {
        "get": op(
            "listItemCategories",
            "Item categories for a project type (all of them for an unknown or missing code)",
            "lookups",
            "auth",
            {"200": ok(arr(obj({"id": INT, "label": null(STR)})))},
            parameters=[
                query("projectTypeCode", {"type": "string", "maxLength": 16}, description="ref_project_types.code")
            ],
        )
    }

    # -- I1-I4 items (staff) --
    project_id_q = query("projectId", ID_IN, required=True)
    p["/api/items/status-summary"] = {
        "get": op(
            "itemStatusSummary",
            "Item counts per status of a project; the first entry is always `Registered` (no status)",
            "items",
            "staff",
            {"200": ok(arr(obj({"id": null(INT), "label": STR, "count": INT})))},
            {"400": "`projectId is required`"},
            parameters=[project_id_q],
        )
    }
    p["/api/items"] = {
        "get": op(
            "listItems",
            "A project's items, ordered by id",
            "items",
            "staff",
            {
                "200": ok(
                    arr(
                        obj(
                            {
                                "id": INT,
                                "code": STR,
                                "label": null(STR),
                                "projectId": INT,
                                "categoryId": null(INT),
                                "createdAt": null(DATETIME),
                                "updatedAt": null(DATETIME),
                                "statusLabel": null(STR),
                            }
                        )
                    )
                )
            },
            {"400": "`projectId is required`"},
            parameters=[project_id_q],
        ),
        "post": op(
            "createItems",
            "Create `count` items in a project, with generated labels and codes",
            "items",
            "staff",
            {"201": ok(obj({"items": arr(obj({"id": INT, "code": STR}))}), "Created")},
            {
                "400": "`projectId is required`, `count must be at least 1`, `count must be at most <n>`, "
                "`Project is missing item type.`, `Category not found`, `categoryId must be a number`, "
                "`userId must be a number`, `userId does not refer to a user`",
                "404": "`Project not found`",
            },
            request=obj(
                {
                    "projectId": NUMERIC_IN,
                    "categoryId": USER_ID_IN,
                    "userId": USER_ID_IN,
                    "count": null({"type": "integer", "minimum": 1, "maximum": 100}),
                },
                required=["projectId"],
            ),
        ),
    }
    p["/api/items/jira-sync"] = {
        "post": op(
            "jiraSync",
            "Import a Jira-connected project's issues as items, statuses and assignments",
            "items",
            "staff",
            {
                "200": ok(
                    obj(
                        {
                            "projectKey": STR,
                            "count": INT,
                            "issues": arr(obj({"key": STR, "status": null(STR), "assignee": null(STR)})),
                        }
                    )
                )
            },
            {
                "400": "`projectId is required`, `Project is not Jira-connected`, `userId does not refer to a user`",
                "404": "`Project not found`, `Matching Jira project not found`",
                "500": "`Jira credentials are not configured`, or `Internal server error`",
                "502": "Jira failed or did not answer in time: `Jira is unavailable`",
            },
            parameters=[query("projectId", ID_IN, description="used when the body has no projectId")],
            request=obj({"projectId": NUMERIC_IN, "userId": USER_ID_IN}, required=[]),
        )
    }

    # -- P1-P5 projects (staff) --
    p["/api/projects"] = {
        "get": op(
            "listProjects",
            "Every project, newest first",
            "projects",
            "staff",
            {
                "200": ok(
                    arr(
                        obj(
                            {
                                "id": INT,
                                "name": STR,
                                "code": null({**STR, "description": "projects.type_code"}),
                                "project_type": null(STR),
                                "project_status": null(STR),
                                "customer_name": null(STR),
                                "isJira": FLAG,
                                "created_at": DATETIME,
                            }
                        )
                    )
                )
            },
        ),
        "post": op(
            "createProject",
            "Create a project with its team, tasks, task data and item-status rules",
            "projects",
            "staff",
            {"201": ok(ID_ONLY, "Created")},
            {"400": "`Project name is required`, or an invalid or unknown reference"},
            request=PROJECT_CONFIG_IN,
        ),
    }
    project_id_path = path_id("the project id")
    p["/api/projects/{id}"] = {
        "get": op(
            "getProject",
            "A project's full configuration, for the edit form",
            "projects",
            "staff",
            {
                "200": ok(
                    obj(
                        {
                            "project": obj(
                                {
                                    "id": INT,
                                    "name": STR,
                                    "type_code": null(STR),
                                    "item_id": null(INT),
                                    "unit_id": null(INT),
                                    "project_status_id": null(INT),
                                    "customer_id": null(INT),
                                    "isJira": FLAG,
                                }
                            ),
                            "team": arr(obj({"userId": INT, "roleId": INT})),
                            "tasks": arr(
                                obj(
                                    {
                                        "taskId": INT,
                                        "taskTitle": STR,
                                        "categoryId": null(INT),
                                        "rolesId": arr(INT),
                                        "taskData": arr(
                                            obj(
                                                {
                                                    "id": INT,
                                                    "dataDefId": INT,
                                                    "valueType": STR,
                                                    "value": {
                                                        "description": "the typed value column: integer, DECIMAL "
                                                        "string, text, 0/1, ISO date string, JSON text, or null",
                                                    },
                                                    "isRequired": FLAG,
                                                }
                                            )
                                        ),
                                        "projectTaskId": null(INT),
                                    }
                                )
                            ),
                            "itemTracking": arr(
                                obj({"statusText": STR, "taskIds": arr(INT), "applyAfterFinish": FLAG})
                            ),
                        }
                    )
                )
            },
            {"400": "`Invalid project id`", "404": "`Project not found`"},
            parameters=[project_id_path],
        ),
        "put": op(
            "updateProject",
            "Replace a project's configuration (team, tasks, task data, item-status rules)",
            "projects",
            "staff",
            {"200": ok(ID_ONLY)},
            {
                "400": "`Invalid project id`, `Project name is required`, or an invalid or unknown reference",
                "404": "`Project not found`",
            },
            parameters=[project_id_path],
            request=PROJECT_CONFIG_IN,
        ),
    }
    p["/api/projects/{id}/jira"] = {
        "put": op(
            "setProjectJira",
            "Set or clear a project's Jira flag",
            "projects",
            "staff",
            {"200": ok(ID_ONLY)},
            {"400": "`Invalid project id`, `isJira is required`", "404": "`Project not found`"},
            parameters=[project_id_path],
            request=obj(
                {"isJira": FLAG_IN, "is_jira": FLAG_IN},
                required=[],
                description="`isJira` (or `is_jira`) is required",
            ),
        )
    }

    # -- T1-T7 time tracking (staff) --
    p["/api/time-tracking"] = {
        "get": op(
            "listTimeTracking",
            "A user's segments over a day or a date range (production sheet)",
            "time-tracking",
            "staff",
            {"200": ok(arr(SEGMENT_OUT))},
            {"400": RANGE_400},
            parameters=RANGE_PARAMS,
        ),
        "post": op(
            "createTimeTrackingEntry",
            "Add a manual segment",
            "time-tracking",
            "staff",
            {"201": ok(obj({"id": INT, "uuid": STR}), "Created")},
            {
                "400": "`userId, date, activityId, startTime, and endTime are required`, `Invalid start or end "
                "time`, `End time must be after start time`, `Invalid itemId`, `note must be a string`",
                "409": "`Time range overlaps an existing entry.`",
            },
            request=obj(
                {
                    "userId": USER_ID_IN,
                    "date": DAY,
                    "activityId": NUMERIC_IN,
                    "startTime": HHMM,
                    "endTime": HHMM,
                    "note": null({"type": "string", "maxLength": 5000}),
                    "itemId": USER_ID_IN,
                },
                required=["date", "activityId", "startTime", "endTime"],
            ),
        ),
    }
    p["/api/time-tracking/metrics"] = {
        "get": op(
            "timeTrackingMetrics",
            "Pages-per-minute metrics of a user's page-counting task segments",
            "time-tracking",
            "staff",
            {"200": ok(arr(METRIC_OUT))},
            {"400": RANGE_400},
            parameters=RANGE_PARAMS,
        )
    }
    p["/api/time-tracking/bulk-delete"] = {
        "post": op(
            "bulkDeleteTimeTracking",
            "Delete several segments (all or nothing)",
            "time-tracking",
            "staff",
            {"200": ok(obj({"success": TRUE, "deleted": INT}))},
            {
                "400": "`ids is required`, `Too many ids`",
                "403": "A non-admin named someone else's entry: `Forbidden`",
            },
            request=obj({"ids": arr(ID_IN, minItems=1, maxItems=1000)}),
        )
    }
    p["/api/time-tracking/{id}"] = {
        "put": op(
            "updateTimeTrackingEntry",
            "Edit a segment's day, times and note",
            "time-tracking",
            "staff",
            {"200": ok(SUCCESS)},
            {
                "400": "`Invalid entry id`, `startDate and endDate are required (YYYY-MM-DD)`, `startTime is "
                "required (HH:MM)`, `endTime must be HH:MM or empty`, `End time must be after start time`, "
                "`Start date and end date must match`, `note must be a string`",
                "403": "Not the owner and not an admin: `Forbidden`",
                "404": "`Entry not found`",
                "409": "`Time range overlaps an existing entry.`",
            },
            parameters=[ENTRY_ID],
            request=obj(
                {
                    "startDate": DAY,
                    "start_date": DAY,
                    "endDate": DAY,
                    "end_date": DAY,
                    "startTime": HHMM,
                    "start_time": HHMM,
                    "endTime": null({"anyOf": [HHMM, {"type": "string", "const": ""}]}),
                    "end_time": null({"anyOf": [HHMM, {"type": "string", "const": ""}]}),
                    "note": null({"type": "string", "maxLength": 5000}),
                },
                required=[],
                description="startDate, endDate and startTime are required, in camelCase or snake_case",
            ),
        ),
        "delete": op(
            "deleteTimeTrackingEntry",
            "Delete one segment (`deleted: 0` when it does not exist)",
            "time-tracking",
            "staff",
            {"200": ok(obj({"success": TRUE, "deleted": {"type": "integer", "enum": [0, 1]}}))},
            {"400": "`Invalid entry id`", "403": "Not the owner and not an admin: `Forbidden`"},
            parameters=[ENTRY_ID],
        ),
    }
    p["/api/time-tracking/{id}/note"] = {
        "put": op(
            "setTimeTrackingNote",
            "Set a segment's note",
            "time-tracking",
            "staff",
            {"200": ok(SUCCESS)},
            {
                "400": "`Invalid entry id`, `note must be a string`",
                "403": "Not the owner and not an admin: `Forbidden`",
                "404": "`Entry not found`",
            },
            parameters=[ENTRY_ID],
            request=obj({"note": null({"type": "string", "maxLength": 5000})}, required=[]),
        )
    }

    # -- D1 desktop login (auth service) --
    p["/api/desktop/login-authcode"] = {
        "post": op(
            "desktopLogin",
            "Desktop login with a personal code (active users only)",
            "auth",
            None,
            {"200": ok(AUTHCODE_LOGIN_OUT)},
            {"400": "`code is required`"},
            request=obj({"code": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": r"\S"}}),
            login=True,
        )
    }

    # -- D2-D17 desktop facade (staff; a non-admin acts on their own records) --
    desktop_project = query("projectId", ID_IN, required=True)
    desktop_task = query("taskId", ID_IN, required=True)
    desktop_user = query("userId", ID_IN, description="whose rows (admins only; others always get their own)")
    p["/api/desktop/bootstrap"] = {
        "get": op(
            "desktopBootstrap",
            "Reference data for the desktop and its offline cache",
            "desktop",
            "staff",
            {
                "200": {
                    **ok(BOOTSTRAP_OUT),
                    "headers": {"ETag": {"description": "the data version", "schema": STR}},
                },
                "304": {"description": "Not modified since the ETag given in If-None-Match"},
            },
            parameters=[
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": STR,
                    "description": "an ETag from an earlier answer",
                }
            ],
        )
    }
    p["/api/desktop/project-task-data"] = {
        "get": op(
            "desktopProjectTaskData",
            "A project task's data fields with their project-level default values",
            "desktop",
            "staff",
            {
                "200": ok(
                    arr(
                        obj(
                            {
                                "id": INT,
                                "projectTaskId": INT,
                                "dataDefId": INT,
                                "definitionLabel": STR,
                                "valueType": STR,
                                "isRequired": FLAG,
                                **VALUE_COLUMNS,
                            }
                        )
                    )
                )
            },
            {"400": "`projectId and taskId are required`"},
            parameters=[desktop_project, desktop_task],
        )
    }
    p["/api/desktop/task-data"] = {
        "post": op(
            "desktopSaveTaskData",
            "Set a project-level task-data default value",
            "desktop",
            "staff",
            {"200": ok(obj({"success": TRUE, "updated": TRUE, "created": TRUE}, required=["success"]))},
            {
                "400": "`projectId, taskId, dataDefId and valueType are required`, `Invalid value type`, "
                "`Unknown dataDefId`, `Invalid task data value` (e.g. a date outside 1000-9999)",
                "404": "`Project task not found`",
            },
            request=obj(
                {
                    "projectId": ID_IN,
                    "taskId": ID_IN,
                    "dataDefId": ID_IN,
                    "valueType": {"type": "string", "enum": VALUE_TYPES},
                    "value": ANY,
                },
                required=["projectId", "taskId", "dataDefId", "valueType"],
            ),
        )
    }
    p["/api/desktop/available-tasks"] = {
        "get": op(
            "desktopAvailableTasks",
            "Tasks the user's project roles allow in a project",
            "desktop",
            "staff",
            {"200": ok(arr(obj({"id": INT, "description": STR, "is_default": INT, "roleId": INT})))},
            {"400": "`userId and projectId are required`"},
            parameters=[desktop_user, desktop_project],
        )
    }
    p["/api/desktop/project-items"] = {
        "get": op(
            "desktopProjectItems",
            "A project's items (or its legacy cfs/im items)",
            "desktop",
            "staff",
            {"200": ok(arr(obj({"id": INT, "name": null(STR), "status_label": null(STR)}, required=["id", "name"])))},
            {"400": "`projectId is required`"},
            parameters=[
                desktop_project,
                query("projectTypeId", {"type": "integer", "minimum": 0}, description="1 CFS, 2 IM (fallback tables)"),
            ],
        )
    }
    p["/api/desktop/item-tracking-tasks"] = {
        "get": op(
            "desktopItemTrackingTasks",
            "Ids of the project's tasks that work on items",
            "desktop",
            "staff",
            {"200": ok(arr(INT))},
            {"400": "`projectId is required`"},
            parameters=[desktop_project],
        )
    }
    p["/api/desktop/item-status-rule"] = {
        "get": op(
            "desktopItemStatusRule",
            "The item status to apply when a task starts or finishes (`null` when there is no rule)",
            "desktop",
            "staff",
            {"200": ok(null(obj({"statusId": INT, "applyAfterFinish": FLAG})))},
            {"400": "`projectId and taskId are required`"},
            parameters=[
                desktop_project,
                desktop_task,
                query("applyAfterFinish", {"type": "integer", "enum": [0, 1]}, description="absent: any moment"),
            ],
        )
    }
    p["/api/desktop/item-status"] = {
        "post": op(
            "desktopSetItemStatus",
            "Set an item's status",
            "desktop",
            "staff",
            {"200": ok(SUCCESS)},
            {"400": "`itemId and statusId are required`"},
            request=obj({"itemId": ID_IN, "statusId": ID_IN}),
        )
    }
    p["/api/desktop/unfinished-tasks"] = {
        "get": op(
            "desktopUnfinishedTasks",
            "The user's paused production segments, newest first",
            "desktop",
            "staff",
            {
                "200": ok(
                    arr(
                        obj(
                            {
                                "id": INT,
                                "uuid": STR,
                                "taskId": null(INT),
                                "itemId": null(INT),
                                "projectId": null(INT),
                                "startedAt": DATETIME,
                                "stoppedAt": null(DATETIME),
                                "projectName": null(STR),
                                "taskName": null(STR),
                                "itemName": null(STR),
                            }
                        )
                    )
                )
            },
            {"400": "`userId is required`"},
            parameters=[desktop_user],
        )
    }
    p["/api/desktop/assignments"] = {
        "get": op(
            "desktopAssignments",
            "The user's assignments not yet accepted, newest first",
            "desktop",
            "staff",
            {
                "200": ok(
                    arr(
                        obj(
                            {
                                "id": INT,
                                "projectId": INT,
                                "taskId": null(INT),
                                "itemId": null(INT),
                                "isAccepted": null(FLAG),
                                "projectName": null(STR),
                                "taskName": null(STR),
                                "itemName": null(STR),
                            }
                        )
                    )
                )
            },
            {"400": "`userId is required`"},
            parameters=[desktop_user],
        )
    }
    p["/api/desktop/assignment-accepted"] = {
        "post": op(
            "desktopAcceptAssignment",
            "Mark an assignment accepted",
            "desktop",
            "staff",
            {"200": ok(SUCCESS)},
            {"400": "`assignmentId is required`"},
            request=obj({"assignmentId": ID_IN}),
        )
    }
    p["/api/desktop/tracking-data"] = {
        "get": op(
            "desktopTrackingData",
            "The task data captured on one segment",
            "desktop",
            "staff",
            {"200": ok(arr(obj({"dataDefId": INT, "valueType": STR, **TRACKING_VALUE_COLUMNS})))},
            {"400": "`uuid is required`"},
            parameters=[query("uuid", UUID, required=True)],
        )
    }
    p["/api/desktop/unfinished-finished"] = {
        "post": op(
            "desktopRetireUnfinished",
            "Mark a paused segment finished (by uuid, else by record id)",
            "desktop",
            "staff",
            {"200": ok(SUCCESS)},
            {"400": "`recordId or uuid is required`, `uuid is too long`"},
            request=obj(
                {"uuid": UUID, "recordId": ID_IN},
                required=[],
                description="`uuid` or `recordId` is required",
            ),
        )
    }
    start_200 = ok(obj({"success": TRUE, "duplicate": TRUE}, required=["success"]), "Started, or a duplicate uuid")
    start_409 = "The uuid belongs to another user's segment"
    p["/api/desktop/activities/start-unallocated"] = {
        "post": op(
            "desktopStartActivity",
            "Open a non-task activity segment (clock-in, break, lunch, meeting, ...)",
            "desktop",
            "staff",
            {"200": start_200},
            {
                "400": "`uuid, user_id/userId and activity_id/activityId are required`, `uuid is too long`, "
                "`Invalid timestamp`, an unknown reference",
                "409": start_409,
            },
            request=obj(
                {
                    "uuid": UUID,
                    "user_id": USER_ID_IN,
                    "userId": USER_ID_IN,
                    "activity_id": null(ID_IN),
                    "activityId": null(ID_IN),
                    "timestamp": INSTANT_IN,
                },
                required=["uuid"],
            ),
        )
    }
    p["/api/desktop/activities/start-task"] = {
        "post": op(
            "desktopStartTask",
            "Open a production-task segment",
            "desktop",
            "staff",
            {"200": start_200},
            {
                "400": "`uuid, user_id/userId, project_id/projectId and task_id/taskId are required`, "
                "`uuid is too long`, `Invalid timestamp`, an unknown reference",
                "409": start_409,
            },
            request=obj(
                {
                    "uuid": UUID,
                    "user_id": USER_ID_IN,
                    "userId": USER_ID_IN,
                    "project_id": ID_IN,
                    "projectId": ID_IN,
                    "task_id": ID_IN,
                    "taskId": ID_IN,
                    "item_id": null(ID_IN),
                    "itemId": null(ID_IN),
                    "timestamp": INSTANT_IN,
                },
                required=["uuid"],
                description="project_id/projectId and task_id/taskId are required",
            ),
        )
    }
    tracking_value_in = obj(
        {
            "data_def_id": ID_IN,
            "dataDefId": ID_IN,
            "value_type": {"type": "string", "enum": VALUE_TYPES},
            "valueType": {"type": "string", "enum": VALUE_TYPES},
            "value": ANY,
        },
        required=[],
    )
    p["/api/desktop/activities/complete"] = {
        "post": op(
            "desktopCompleteActivity",
            "Close an activity segment (idempotent: `duplicate` when already closed, `ignored` when unknown)",
            "desktop",
            "staff",
            {
                "200": ok(
                    obj({"success": TRUE, "duplicate": TRUE, "ignored": TRUE}, required=["success"]),
                    "Closed, already closed (`duplicate`), or not found (`ignored`)",
                )
            },
            {
                "400": "`uuid and user_id/userId are required`, `uuid is too long`, `Invalid timestamp`, "
                "`Unknown data definition in taskData`",
            },
            request=obj(
                {
                    "uuid": UUID,
                    "user_id": USER_ID_IN,
                    "userId": USER_ID_IN,
                    "is_completed_project_task": null(FLAG_IN),
                    "isTaskCompleted": null(FLAG_IN),
                    "note": null({"type": "string", "maxLength": 5000}),
                    "taskData": arr(tracking_value_in, maxItems=100),
                    "task_data": arr(tracking_value_in, maxItems=100),
                    "timestamp": INSTANT_IN,
                },
                required=["uuid"],
            ),
        )
    }
    return p


def build() -> dict[str, Any]:
    """The whole document (a new dict on every call)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "CCSM backend API",
            "version": "1.0.0",
            "description": (
                "The HTTP contract of the CCSM backend (auth and api services), compatible with the Node "
                'backend it replaces. Every error body is `{"error": string}`. Values: ids and counts are '
                "integers, dates and datetimes ISO-8601 UTC strings with milliseconds, DECIMALs strings, flags "
                "the integers 0/1. `/api/login` and `/api/desktop/login-authcode` are served by the auth "
                "service, every other `/api` path by the api service."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": name}
            for name in (
                "auth",
                "users",
                "customers",
                "lookups",
                "items",
                "projects",
                "time-tracking",
                "desktop",
                "ops",
            )
        ],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "HS256 JWT from `/api/login` or `/api/desktop/login-authcode`",
                }
            },
            "schemas": {
                "Error": obj({"error": STR}, description="Every error body"),
            },
        },
    }
