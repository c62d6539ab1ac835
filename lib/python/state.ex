defmodule Python.State do
  @moduledoc """
  The shared state store of erlang_python (`py:state_*`): an ETS table that
  Elixir and every Python worker see alike. Python reaches it through the
  `erlang` module: `erlang.state_get(k, default=None)`, `state_set`,
  `state_delete`, `state_keys`, `state_clear`, `state_incr`, `state_decr`
  (see docs/callbacks.md).

  A top-level atom key is stored as a string (except `true`, `false`, `nil`,
  `:none`, `:undefined`), so `:counter`, `"counter"` and Python's
  `'counter'` are one key; `keys/0` returns it as a string. Atoms inside a
  composite key are kept: `{:user, 1}` and Python's `('user', 1)` differ.
  A counter whose value is not an integer makes `incr/2` raise.

      :ok = Python.State.put(:greeting, "hello")
      {:ok, "hello"} = Python.State.fetch("greeting")
      2 = Python.State.incr(:hits, 2)
  """

  @doc "Stores `value` under `key`."
  @spec put(term(), term()) :: :ok
  def put(key, value), do: :py.state_store(key, value)

  @doc "`{:ok, value}`, or `:error` when `key` is absent."
  @spec fetch(term()) :: {:ok, term()} | :error
  def fetch(key) do
    case :py.state_fetch(key) do
      {:ok, value} -> {:ok, value}
      {:error, :not_found} -> :error
    end
  end

  @doc "The value under `key`, or `default` when it is absent."
  @spec get(term(), term()) :: term()
  def get(key, default \\ nil) do
    case fetch(key) do
      {:ok, value} -> value
      :error -> default
    end
  end

  @doc "Removes `key` (`:ok` also when absent)."
  @spec delete(term()) :: :ok
  def delete(key), do: :py.state_remove(key)

  @doc "Every key."
  @spec keys() :: [term()]
  def keys, do: :py.state_keys()

  @doc "Removes every key."
  @spec clear() :: :ok
  def clear, do: :py.state_clear()

  @doc "Atomically adds `n` (default 1) and returns the new value; an absent key counts as 0."
  @spec incr(term(), integer()) :: integer()
  def incr(key, n \\ 1) when is_integer(n), do: :py.state_incr(key, n)

  @doc "Atomically subtracts `n` (default 1) and returns the new value."
  @spec decr(term(), integer()) :: integer()
  def decr(key, n \\ 1) when is_integer(n), do: :py.state_decr(key, n)
end
