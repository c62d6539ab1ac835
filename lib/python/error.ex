defmodule Python.Error do
  @moduledoc """
  The error of a failed `Python` call: returned as `{:error, %Python.Error{}}`
  by the plain functions and raised by the bang ones (`Python.call!/4`...).

  Fields:

    * `:type` - the class name of the Python exception, without its module:
      `:ZeroDivisionError`, `:JSONDecodeError`, `:MyError`. An atom, or a
      string for classes defined in Python code once erlang_python stopped
      making new atoms for them (see docs/errors.md). `nil` when the error
      is not a Python exception (a timeout, no worker...).
    * `:message` - for a Python exception, `str(exception)`
      (`"division by zero"`); otherwise a sentence saying what happened.
    * `:traceback` - for a Python exception, the formatted traceback (as
      Python prints it), or `nil`.
    * `:reason` - the error term `py` returned, unchanged: `{type, message}`
      for a Python exception, else `:timeout`, `:no_workers_available`,
      `:worker_crashed`, `:not_running`, `:context_not_bound`,
      `{:badarg, what}` or `{:overloaded, current, max}`.

  Match on `:type` for Python exceptions and on `:reason` for the others:

      case Python.eval("1 / 0") do
        {:ok, value} -> value
        {:error, %Python.Error{type: :ZeroDivisionError}} -> :infinity
        {:error, %Python.Error{reason: :timeout}} -> :retry
      end

  `Exception.message/1` gives `"Type: message"` followed by the traceback
  for Python exceptions, and the sentence otherwise.
  """

  defexception [:type, :message, :traceback, :reason]

  @typedoc "A `Python.Error`; see the module documentation for the fields."
  @type t :: %__MODULE__{
          type: atom() | String.t() | nil,
          message: String.t() | nil,
          traceback: String.t() | nil,
          reason: term()
        }

  @doc """
  Builds the exception. `reason:` is an error term of `py` (`traceback:`
  goes with a Python exception); without `reason:`, the fields are given
  directly (`message:`, `type:`...). A string is taken as the message.

      iex> Python.Error.exception(reason: :timeout).message
      "timeout: the call did not finish in time (running Python code was interrupted, a queued request dropped)"

      iex> Python.Error.exception(reason: {:ValueError, "bad"}).type
      :ValueError
  """
  @impl Exception
  @spec exception(keyword() | String.t()) :: t()
  def exception(message) when is_binary(message), do: %__MODULE__{message: message}

  def exception(opts) when is_list(opts) do
    case Keyword.fetch(opts, :reason) do
      {:ok, {type, message} = reason}
      when (is_atom(type) or is_binary(type)) and is_binary(message) ->
        %__MODULE__{
          type: type,
          message: message,
          traceback: traceback(opts[:traceback]),
          reason: reason
        }

      {:ok, reason} ->
        %__MODULE__{
          message: Keyword.get_lazy(opts, :message, fn -> describe(reason) end),
          reason: reason
        }

      :error ->
        struct!(__MODULE__, opts)
    end
  end

  @doc """
  The exception for an error term that a `py` call made by this process
  has just returned. For a Python exception it takes the traceback from
  `py:last_traceback/0` (which `py` keeps per process), so call it right
  after the failing call, in the same process.

      {:error, reason} = :py.eval("1 / 0")
      Python.Error.from_reason(reason)
      #=> %Python.Error{type: :ZeroDivisionError, message: "division by zero", ...}
  """
  @spec from_reason(term()) :: t()
  def from_reason({type, message} = reason)
      when (is_atom(type) or is_binary(type)) and is_binary(message) do
    exception(reason: reason, traceback: :py.last_traceback())
  end

  def from_reason(reason), do: exception(reason: reason)

  @doc """
  `"Type: message"` and the Python traceback for a Python exception, the
  sentence of the `:message` field otherwise.
  """
  @impl Exception
  @spec message(t()) :: String.t()
  def message(%__MODULE__{type: nil, message: message}), do: message || "Python error"

  def message(%__MODULE__{type: type, message: message, traceback: nil}),
    do: "#{type}: #{message}"

  def message(%__MODULE__{type: type, message: message, traceback: traceback}),
    do: "#{type}: #{message}\n\nPython traceback:\n" <> String.trim_trailing(traceback)

  defp traceback(tb) when is_binary(tb) and tb != "", do: tb
  defp traceback(_), do: nil

  defp describe(:timeout),
    do:
      "timeout: the call did not finish in time (running Python code was interrupted, a queued request dropped)"

  defp describe(:no_workers_available),
    do:
      "no Python worker available: every worker is bound (release a binding, or raise num_workers)"

  defp describe(:worker_crashed),
    do: "worker crashed: the Python worker holding the request was taken out of service"

  defp describe(:not_running),
    do:
      "the erlang_python application is not running (Application.ensure_all_started(:erlang_python))"

  defp describe(:context_not_bound),
    do: "context not bound: the context was released, or its worker was lost"

  defp describe({:badarg, what}),
    do: "bad argument: #{inspect(what)} was refused before anything ran"

  defp describe({:overloaded, current, max}),
    do:
      "overloaded: the timeout passed while the request waited for a slot " <>
        "(#{current} of #{max} requests in progress); it never ran"

  defp describe(other), do: "Python call failed: #{inspect(other)}"
end
