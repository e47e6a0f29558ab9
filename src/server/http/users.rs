//! `/users`: the server's users, managed by admins. The users given at start (the users file,
//! or `QUARRY_SERVER_PASSWORD`'s user) are admins and are listed but not managed here;
//! users added here are kept in the metadata store with their role and an argon2 hash.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PathParams};
use super::model::ErrorBody;
use crate::audit::{Actor, Role};
use crate::error::Error;
use crate::store::UserRecord;

/// A server user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    /// The name they log in with.
    pub name: String,
    /// admin or member.
    pub role: String,
    /// Whether it is managed here (false: given at start, an admin).
    pub managed: bool,
}

/// `POST /users`: a user to add (or whose password and role to replace).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The name they log in with: 1 to 64 characters, no ':' and no spaces.
    pub name: String,
    /// Their password (stored as an argon2 hash, never shown).
    pub password: String,
    /// admin or member.
    pub role: String,
}

fn admin_only() -> Result<(), ApiError> {
    if Actor::current().is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden("only admins manage users".into()).into())
    }
}

/// List the server's users.
#[utoipa::path(get, path = "/users", tag = "users",
    responses(
        (status = 200, description = "Every user, by name", body = [UserInfo]),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn list(State(app): State<AppState>) -> ApiResult<Json<Vec<UserInfo>>> {
    admin_only()?;
    let mut users: Vec<UserInfo> = app
        .auth
        .given_users()
        .into_iter()
        .map(|name| UserInfo {
            name,
            role: Role::Admin.as_str().to_owned(),
            managed: false,
        })
        .collect();
    users.extend(
        app.engine
            .store()
            .users()
            .await?
            .into_iter()
            .map(|u| UserInfo {
                name: u.name,
                role: u.role.as_str().to_owned(),
                managed: true,
            }),
    );
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(users))
}

/// Add a user, or replace the password and role of one added before.
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser,
    responses(
        (status = 201, description = "Stored", body = UserInfo),
        (status = 400, description = "The body is not a user", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "A name, password or role breaks a rule", body = ErrorBody),
    ))]
pub async fn put(
    State(app): State<AppState>,
    JsonBody(user): JsonBody<NewUser>,
) -> ApiResult<(StatusCode, Json<UserInfo>)> {
    admin_only()?;
    let invalid = |message: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
    };
    let name = user.name.trim();
    if name.is_empty()
        || name.chars().count() > 64
        || name.contains(':')
        || name.chars().any(char::is_whitespace)
    {
        return Err(invalid(format!(
            "invalid user name '{}': 1 to 64 characters, without ':' or spaces",
            user.name
        )));
    }
    if app.auth.is_given_user(name) {
        return Err(invalid(format!(
            "user '{name}' is given at start (users file or QUARRY_SERVER_PASSWORD) and is \
             managed there"
        )));
    }
    if user.password.is_empty() {
        return Err(invalid("the password must not be empty".into()));
    }
    let role = Role::parse(&user.role).map_err(|e| invalid(e.to_string()))?;
    let password_hash = crate::server::auth::hash_password(&SecretString::from(user.password))?;
    app.engine
        .store()
        .put_user(&UserRecord {
            name: name.to_owned(),
            role,
            password_hash,
            created_at: chrono::Utc::now(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserInfo {
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            managed: true,
        }),
    ))
}

/// Remove a user added through the API; their tokens stop working.
#[utoipa::path(delete, path = "/users/{name}", tag = "users",
    params(("name" = String, Path, description = "The user's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub async fn delete(
    State(app): State<AppState>,
    PathParams(name): PathParams<String>,
) -> ApiResult<StatusCode> {
    admin_only()?;
    if app.engine.store().delete_user(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!("no user '{name}' was added through the API")).into())
    }
}
